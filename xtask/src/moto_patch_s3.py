"""S3 gaps of moto 5.2.5: a cross-account CopyObject drops the source's tags,
and a cross-account GetObjectTagging reads none.

Imported by moto_server_escrow.py.

What AWS does (CopyObject, x-amz-tagging-directive): with the default
`TaggingDirective=COPY` the copy gets the source object's tags, whichever
account owns the source (the caller needs s3:GetObjectTagging on it); with
`REPLACE` it gets the request's `x-amz-tagging` instead.

The gap: moto keeps tags in each account's own tagger and copies them with
the destination account's, which never holds the source's tags when the
source bucket is another account's; the copy lands untagged. This patch
copies the source's tags from the source account's tagger after such a copy.
`REPLACE` still wins: moto applies the request's tags after `copy_object`
returns. Same-account copies are left to moto, which already copies them.

The same gap makes GetObjectTagging with another account's credentials (the
escrow reading a primary object's tags, as a copy in parts does) look in the
caller's tagger and find nothing; AWS answers with the object's tags. This
patch reads them from the object's own account's tagger.
"""

from moto.s3.models import S3Backend, s3_backends

_copy_object = S3Backend.copy_object


def copy_object(self, src_key, dest_bucket_name, dest_key_name, *args, **kwargs):
    result = _copy_object(self, src_key, dest_bucket_name, dest_key_name, *args, **kwargs)
    src_account = getattr(src_key, "account_id", self.account_id)
    if src_account != self.account_id:
        partition = getattr(src_key, "partition", "aws")
        source = s3_backends[src_account][partition]
        tags = source.tagger.list_tags_for_resource(src_key.arn).get("Tags", [])
        new_key = self.get_object(dest_bucket_name, dest_key_name)
        if tags and new_key is not None:
            self.tagger.tag_resource(new_key.arn, tags)
    return result


S3Backend.copy_object = copy_object


_get_object_tagging = S3Backend.get_object_tagging


def get_object_tagging(self, key):
    owner = getattr(key, "account_id", self.account_id)
    if owner != self.account_id:
        partition = getattr(key, "partition", "aws")
        return s3_backends[owner][partition].tagger.list_tags_for_resource(key.arn)
    return _get_object_tagging(self, key)


S3Backend.get_object_tagging = get_object_tagging
