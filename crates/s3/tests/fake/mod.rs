//! A small in-process S3 behind the SDK's HTTP connector: enough of the REST
//! API for the S3 Source and Sink (listing, tagging, head, ranged GET,
//! PutObject, CopyObject, multipart uploads by copy or upload, abort,
//! ListMultipartUploads). Requests never leave the process. Each bucket is
//! versioned: every write adds a version, so a test can tell a key copied
//! once from a key copied twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use percent_encoding::percent_decode_str;

const LAST_MODIFIED: &str = "2026-11-28T00:00:00.000Z";
const LAST_MODIFIED_HTTP: &str = "Sat, 28 Nov 2026 00:00:00 GMT";

/// One stored object.
#[derive(Debug, Clone)]
pub struct Obj {
    pub data: Bytes,
    pub etag: String,
    pub meta: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, Bytes>,
    meta: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<(String, String), Obj>,
    versions: HashMap<(String, String), u32>,
    uploads: BTreeMap<String, Upload>,
    next_upload: u64,
    created: u64,
    completed: u64,
    aborted: u64,
}

/// The server; clones share the store.
#[derive(Debug, Clone, Default)]
pub struct FakeS3(Arc<Mutex<Store>>);

/// The ETag the fake gives `data` (FNV-1a 64, quoted).
pub fn etag(data: &[u8]) -> String {
    escrow_sync_testkit::fingerprint(data)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn xml(status: u16, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), "application/xml".into())],
        body: body.into(),
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    xml(status, format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>"))
}

fn empty(status: u16) -> Reply {
    Reply { status, headers: vec![], body: Bytes::new() }
}

impl FakeS3 {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `data` under `bucket`/`key` (a new version).
    pub fn put(&self, bucket: &str, key: &str, data: Bytes) {
        let mut s = self.0.lock().unwrap();
        Self::store(&mut s, bucket, key, data, None, Vec::new());
    }

    fn store(
        s: &mut Store,
        bucket: &str,
        key: &str,
        data: Bytes,
        tag: Option<String>,
        meta: Vec<(String, String)>,
    ) -> String {
        let etag = tag.unwrap_or_else(|| etag(&data));
        let id = (bucket.to_string(), key.to_string());
        *s.versions.entry(id.clone()).or_default() += 1;
        s.objects.insert(id, Obj { data, etag: etag.clone(), meta });
        etag
    }

    /// The current object at `bucket`/`key`.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Obj> {
        self.0.lock().unwrap().objects.get(&(bucket.into(), key.into())).cloned()
    }

    /// How many versions `bucket`/`key` has (how often it was written).
    pub fn versions(&self, bucket: &str, key: &str) -> u32 {
        self.0.lock().unwrap().versions.get(&(bucket.into(), key.into())).copied().unwrap_or(0)
    }

    /// Every key of `bucket`.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.objects.keys().filter(|(b, _)| b == bucket).map(|(_, k)| k.clone()).collect()
    }

    /// Uploads created, completed and aborted, and how many are open.
    pub fn upload_counts(&self) -> (u64, u64, u64, usize) {
        let s = self.0.lock().unwrap();
        (s.created, s.completed, s.aborted, s.uploads.len())
    }

    fn handle(&self, request: &HttpRequest) -> Reply {
        let uri = request.uri();
        let path_and_query = match uri.find("://") {
            Some(i) => uri[i + 3..].find('/').map(|j| &uri[i + 3 + j..]).unwrap_or("/"),
            None => uri,
        };
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let params: HashMap<String, String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        let path = path.trim_start_matches('/');
        let (bucket, key) = match path.split_once('/') {
            Some((b, k)) => (decode(b), decode(k)),
            None => (decode(path), String::new()),
        };
        let header = |name: &str| request.headers().get(name).map(str::to_string);
        let user_meta: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-amz-meta-"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let method = request.method();
        let mut s = self.0.lock().unwrap();
        match (method, key.is_empty()) {
            ("GET", true) if params.contains_key("uploads") => {
                let uploads: String = s
                    .uploads
                    .iter()
                    .filter(|(_, u)| u.bucket == bucket)
                    .map(|(id, u)| {
                        format!(
                            "<Upload><Key>{}</Key><UploadId>{id}</UploadId>\
                             <Initiated>{LAST_MODIFIED}</Initiated></Upload>",
                            xml_escape(&u.key)
                        )
                    })
                    .collect();
                xml(
                    200,
                    format!(
                        "<ListMultipartUploadsResult><Bucket>{bucket}</Bucket>\
                         <IsTruncated>false</IsTruncated>{uploads}</ListMultipartUploadsResult>"
                    ),
                )
            }
            ("GET", true) => {
                let prefix = params.get("prefix").cloned().unwrap_or_default();
                let after = params.get("continuation-token").cloned();
                let max: usize =
                    params.get("max-keys").and_then(|m| m.parse().ok()).unwrap_or(1000);
                let matching: Vec<(&String, &Obj)> = s
                    .objects
                    .iter()
                    .filter(|((b, k), _)| {
                        *b == bucket
                            && k.starts_with(&prefix)
                            && after.as_ref().is_none_or(|a| k.as_str() > a.as_str())
                    })
                    .map(|((_, k), o)| (k, o))
                    .collect();
                let page = &matching[..matching.len().min(max)];
                let truncated = matching.len() > page.len();
                let contents: String = page
                    .iter()
                    .map(|(k, o)| {
                        format!(
                            "<Contents><Key>{}</Key><LastModified>{LAST_MODIFIED}</LastModified>\
                             <ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass>\
                             </Contents>",
                            xml_escape(k),
                            xml_escape(&o.etag),
                            o.data.len()
                        )
                    })
                    .collect();
                let next = match (truncated, page.last()) {
                    (true, Some((k, _))) => {
                        format!("<NextContinuationToken>{}</NextContinuationToken>", xml_escape(k))
                    }
                    _ => String::new(),
                };
                xml(
                    200,
                    format!(
                        "<ListBucketResult><Name>{bucket}</Name><Prefix>{}</Prefix>\
                         <KeyCount>{}</KeyCount><MaxKeys>{max}</MaxKeys>\
                         <IsTruncated>{truncated}</IsTruncated>{next}{contents}</ListBucketResult>",
                        xml_escape(&prefix),
                        page.len()
                    ),
                )
            }
            ("GET", false) if params.contains_key("tagging") => {
                if !s.objects.contains_key(&(bucket.clone(), key.clone())) {
                    return error(404, "NoSuchKey", "The specified key does not exist.");
                }
                xml(200, "<Tagging><TagSet></TagSet></Tagging>".into())
            }
            ("GET" | "HEAD", false) => {
                let Some(obj) = s.objects.get(&(bucket, key)).cloned() else {
                    return if method == "HEAD" {
                        empty(404)
                    } else {
                        error(404, "NoSuchKey", "The specified key does not exist.")
                    };
                };
                if header("if-match").is_some_and(|m| m != obj.etag) {
                    return error(
                        412,
                        "PreconditionFailed",
                        "At least one of the preconditions failed.",
                    );
                }
                let total = obj.data.len();
                let (status, data, range) = match header("range") {
                    Some(r) => {
                        let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
                        let a: usize = a.parse().unwrap();
                        let b: usize = b.parse::<usize>().unwrap().min(total - 1);
                        (206, obj.data.slice(a..=b), Some(format!("bytes {a}-{b}/{total}")))
                    }
                    None => (200, obj.data.clone(), None),
                };
                let mut headers = vec![
                    ("etag".into(), obj.etag.clone()),
                    ("content-length".into(), data.len().to_string()),
                    ("last-modified".into(), LAST_MODIFIED_HTTP.into()),
                    ("content-type".into(), "application/octet-stream".into()),
                ];
                if let Some(r) = range {
                    headers.push(("content-range".into(), r));
                }
                headers.extend(obj.meta.iter().cloned());
                let body = if method == "HEAD" { Bytes::new() } else { data };
                Reply { status, headers, body }
            }
            ("PUT", false) => {
                let part = params.get("partNumber").and_then(|n| n.parse::<i32>().ok());
                let upload = params.get("uploadId").cloned();
                let mut meta = user_meta.clone();
                let data = match header("x-amz-copy-source") {
                    Some(src) => {
                        let src = decode(src.trim_start_matches('/'));
                        let src = src.split_once("?versionId=").map(|(s, _)| s).unwrap_or(&src);
                        let (b, k) = src.split_once('/').unwrap();
                        let Some(obj) = s.objects.get(&(b.to_string(), k.to_string())).cloned()
                        else {
                            return error(404, "NoSuchKey", "The specified key does not exist.");
                        };
                        if header("x-amz-copy-source-if-match").is_some_and(|m| m != obj.etag) {
                            return error(
                                412,
                                "PreconditionFailed",
                                "At least one of the preconditions failed.",
                            );
                        }
                        if header("x-amz-metadata-directive").as_deref() != Some("REPLACE") {
                            meta = obj.meta.clone();
                        }
                        match header("x-amz-copy-source-range") {
                            Some(r) => {
                                let (a, b) =
                                    r.trim_start_matches("bytes=").split_once('-').unwrap();
                                obj.data.slice(a.parse::<usize>().unwrap()..=b.parse().unwrap())
                            }
                            None => obj.data,
                        }
                    }
                    None => match request.body().bytes() {
                        Some(b) => Bytes::copy_from_slice(b),
                        None => return error(400, "InvalidRequest", "streaming body"),
                    },
                };
                let copy = header("x-amz-copy-source").is_some();
                // Parts get a cheap tag (hashing megabytes in a debug build is slow).
                let tag = match part {
                    Some(n) => format!("\"part-{n}-{}\"", data.len()),
                    None => etag(&data),
                };
                match (part, upload) {
                    (Some(n), Some(id)) => {
                        let Some(u) = s.uploads.get_mut(&id) else {
                            return error(
                                404,
                                "NoSuchUpload",
                                "The specified upload does not exist.",
                            );
                        };
                        u.parts.insert(n, data);
                        if copy {
                            xml(
                                200,
                                format!(
                                    "<CopyPartResult><ETag>{}</ETag>\
                                     <LastModified>{LAST_MODIFIED}</LastModified></CopyPartResult>",
                                    xml_escape(&tag)
                                ),
                            )
                        } else {
                            Reply {
                                status: 200,
                                headers: vec![("etag".into(), tag)],
                                body: Bytes::new(),
                            }
                        }
                    }
                    _ => {
                        let tag = Self::store(&mut s, &bucket, &key, data, None, meta);
                        if copy {
                            xml(
                                200,
                                format!(
                                    "<CopyObjectResult><ETag>{}</ETag>\
                                     <LastModified>{LAST_MODIFIED}</LastModified></CopyObjectResult>",
                                    xml_escape(&tag)
                                ),
                            )
                        } else {
                            Reply {
                                status: 200,
                                headers: vec![("etag".into(), tag)],
                                body: Bytes::new(),
                            }
                        }
                    }
                }
            }
            ("POST", false) if params.contains_key("uploads") => {
                s.next_upload += 1;
                s.created += 1;
                let id = format!("upload-{}", s.next_upload);
                s.uploads.insert(
                    id.clone(),
                    Upload {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        parts: BTreeMap::new(),
                        meta: user_meta,
                    },
                );
                xml(
                    200,
                    format!(
                        "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket>\
                         <Key>{}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
                        xml_escape(&key)
                    ),
                )
            }
            ("POST", false) if params.contains_key("uploadId") => {
                let Some(u) = s.uploads.remove(&params["uploadId"]) else {
                    return error(404, "NoSuchUpload", "The specified upload does not exist.");
                };
                s.completed += 1;
                let n = u.parts.len();
                let mut all = Vec::new();
                for p in u.parts.values() {
                    all.extend_from_slice(p);
                }
                let tag = format!("\"{}-{n}\"", params["uploadId"]);
                let tag = Self::store(&mut s, &u.bucket, &u.key, all.into(), Some(tag), u.meta);
                xml(
                    200,
                    format!(
                        "<CompleteMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key>\
                         <ETag>{}</ETag></CompleteMultipartUploadResult>",
                        u.bucket,
                        xml_escape(&u.key),
                        xml_escape(&tag)
                    ),
                )
            }
            ("DELETE", false) if params.contains_key("uploadId") => {
                if s.uploads.remove(&params["uploadId"]).is_none() {
                    return error(404, "NoSuchUpload", "The specified upload does not exist.");
                }
                s.aborted += 1;
                empty(204)
            }
            ("DELETE", false) => {
                s.objects.remove(&(bucket, key));
                empty(204)
            }
            _ => error(400, "NotImplemented", "the fake S3 does not do this"),
        }
    }
}

impl HttpConnector for FakeS3 {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let reply = self.handle(&request);
        let mut response = HttpResponse::new(
            StatusCode::try_from(reply.status).expect("status"),
            SdkBody::from(reply.body),
        );
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value);
        }
        HttpConnectorFuture::ready(Ok(response))
    }
}
