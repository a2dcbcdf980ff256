//! The embedded registry's blobs in a GCS bucket: an `object_store::ObjectStore` over
//! [`GcsClient`] (the JSON API; object_store's own GCS client speaks the XML API, see
//! [`crate::gcs`]) under the registry's [`alien_registry::ObjectBlobStore`].
//!
//! Multipart writes upload each part as an object `_multipart/{id}/{n}` (outside every prefix the
//! registry lists) and compose them (32 at a time, then the composites) into the path when
//! complete, then delete the parts; an aborted upload deletes its parts. Parts a crash left
//! behind are removed by the bucket's lifecycle rule on `_multipart/` (infra/gcp).

use std::ops::Range;
use std::sync::Arc;

use alien_registry::ObjectBlobStore;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};

use crate::config::GcpSettings;
use crate::gcs::{GcsClient, ObjectInfo, Precondition};
use crate::rest::ApiError;

const STORE: &str = "GCS";
/// GCS composes at most 32 objects at once.
const COMPOSE_MAX: usize = 32;

/// An object store on one GCS bucket.
#[derive(Debug, Clone)]
pub struct GcsObjectStore {
    client: GcsClient,
}

impl std::fmt::Display for GcsObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GcsObjectStore(gs://{})", self.client.bucket())
    }
}

impl GcsObjectStore {
    /// The store on `bucket` (no call is made yet).
    pub fn new(settings: &GcpSettings, bucket: &str) -> GcsObjectStore {
        GcsObjectStore { client: GcsClient::new(settings, bucket) }
    }
}

/// The registry's blob store in `bucket` (no call is made yet).
pub fn gcs_blob_store(settings: &GcpSettings, bucket: &str) -> ObjectBlobStore {
    ObjectBlobStore::new(Arc::new(GcsObjectStore::new(settings, bucket)))
}

fn error(path: &str, err: ApiError) -> object_store::Error {
    let source = Box::new(err.clone());
    match err.http_status {
        Some(404) => object_store::Error::NotFound { path: path.to_owned(), source },
        Some(412) => object_store::Error::Precondition { path: path.to_owned(), source },
        _ => object_store::Error::Generic { store: STORE, source },
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: message.into() }
}

fn meta(info: ObjectInfo) -> Result<ObjectMeta, object_store::Error> {
    Ok(ObjectMeta {
        location: Path::parse(&info.name).map_err(|e| generic(e.to_string()))?,
        last_modified: info.updated.unwrap_or_default(),
        size: info.size,
        e_tag: info.etag,
        version: info.generation,
    })
}

fn put_result(info: &ObjectInfo) -> PutResult {
    PutResult {
        e_tag: info.etag.clone(),
        version: info.generation.clone(),
        extensions: Default::default(),
    }
}

fn precondition(path: &str, mode: &PutMode) -> Result<Precondition, object_store::Error> {
    Ok(match mode {
        PutMode::Overwrite => Precondition::None,
        PutMode::Create => Precondition::Absent,
        PutMode::Update(version) => {
            let generation =
                version.version.as_deref().and_then(|g| g.parse().ok()).ok_or_else(|| {
                    object_store::Error::Precondition {
                        path: path.to_owned(),
                        source: "an update needs the object's generation".into(),
                    }
                })?;
            Precondition::Generation(generation)
        }
    })
}

#[async_trait]
impl ObjectStore for GcsObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let name = location.as_ref();
        let precondition = precondition(name, &opts.mode)?;
        let body = Bytes::from(payload);
        match self.client.upload(name, body, precondition).await {
            Ok(info) => Ok(put_result(&info)),
            Err(err) if err.http_status == Some(412) && precondition == Precondition::Absent => {
                Err(object_store::Error::AlreadyExists {
                    path: name.to_owned(),
                    source: Box::new(err),
                })
            }
            Err(err) => Err(error(name, err)),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Box::new(Parts {
            client: self.client.clone(),
            target: location.as_ref().to_owned(),
            prefix: format!("_multipart/{id}"),
            count: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let name = location.as_ref();
        let info =
            self.client.metadata(name).await.map_err(|e| error(name, e))?.ok_or_else(|| {
                object_store::Error::NotFound {
                    path: name.to_owned(),
                    source: "no such object".into(),
                }
            })?;
        let size = info.size;
        let meta = meta(info)?;
        let range: Range<u64> = match &options.range {
            None => 0..size,
            Some(GetRange::Bounded(r)) => {
                if r.start >= size || r.is_empty() {
                    return Err(generic(format!("range {r:?} of {name} ({size} bytes)")));
                }
                r.start..r.end.min(size)
            }
            Some(GetRange::Offset(o)) => {
                if *o >= size {
                    return Err(generic(format!("offset {o} of {name} ({size} bytes)")));
                }
                *o..size
            }
            Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
        };
        if options.head || range.is_empty() {
            let payload = GetResultPayload::Stream(stream::empty().boxed());
            return Ok(GetResult {
                payload,
                meta,
                range,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let ranged = if range == (0..size) { None } else { Some(range.clone()) };
        let response =
            self.client.download(name, ranged).await.map_err(|e| error(name, e))?.ok_or_else(
                || object_store::Error::NotFound {
                    path: name.to_owned(),
                    source: "no such object".into(),
                },
            )?;
        let body = response
            .bytes_stream()
            .map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let client = self.client.clone();
        locations
            .map(move |location| {
                let client = client.clone();
                async move {
                    let location = location?;
                    client
                        .delete(location.as_ref())
                        .await
                        .map_err(|e| error(location.as_ref(), e))?;
                    Ok(location)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let client = self.client.clone();
        let prefix = prefix.map(|p| format!("{}/", p.as_ref())).unwrap_or_default();
        let pages = stream::try_unfold(Some(None::<String>), move |token| {
            let client = client.clone();
            let prefix = prefix.clone();
            async move {
                let Some(token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = client
                    .list(&prefix, None, token.as_deref(), None)
                    .await
                    .map_err(|e| error(&prefix, e))?;
                let next = page.next_page_token.clone().map(Some);
                let items: Vec<object_store::Result<ObjectMeta>> =
                    page.items.into_iter().map(meta).collect();
                Ok(Some((stream::iter(items), next)))
            }
        });
        pages.try_flatten().boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.map(|p| format!("{}/", p.as_ref())).unwrap_or_default();
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list(&prefix, Some("/"), token.as_deref(), None)
                .await
                .map_err(|e| error(&prefix, e))?;
            for dir in page.prefixes {
                let dir = dir.trim_end_matches('/');
                result.common_prefixes.push(Path::parse(dir).map_err(|e| generic(e.to_string()))?);
            }
            for item in page.items {
                result.objects.push(meta(item)?);
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(result),
            }
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let precondition = match options.mode {
            CopyMode::Overwrite => Precondition::None,
            CopyMode::Create => Precondition::Absent,
        };
        match self.client.copy(from.as_ref(), to.as_ref(), precondition).await {
            Ok(_) => Ok(()),
            Err(err) if err.http_status == Some(412) => Err(object_store::Error::AlreadyExists {
                path: to.as_ref().to_owned(),
                source: Box::new(err),
            }),
            Err(err) => Err(error(from.as_ref(), err)),
        }
    }
}

/// A multipart upload: one object per part, composed on completion.
#[derive(Debug)]
struct Parts {
    client: GcsClient,
    target: String,
    prefix: String,
    count: usize,
}

impl Parts {
    fn part_name(&self, index: usize) -> String {
        format!("{}/{index:06}", self.prefix)
    }

    async fn delete_parts(&self, names: &[String]) {
        for name in names {
            if let Err(err) = self.client.delete(name).await {
                tracing::warn!(object = %name, error = %err, "a multipart part was not deleted");
            }
        }
    }
}

#[async_trait]
impl MultipartUpload for Parts {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let name = self.part_name(self.count);
        self.count += 1;
        let client = self.client.clone();
        Box::pin(async move {
            client
                .upload(&name, Bytes::from(data), Precondition::None)
                .await
                .map(|_| ())
                .map_err(|e| error(&name, e))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Vec<String> = (0..self.count).map(|i| self.part_name(i)).collect();
        if parts.is_empty() {
            let info = self
                .client
                .upload(&self.target, Bytes::new(), Precondition::None)
                .await
                .map_err(|e| error(&self.target, e))?;
            return Ok(put_result(&info));
        }
        // Compose in levels of at most 32 until one composite (or the target) remains.
        let mut level = parts.clone();
        let mut made = Vec::new();
        let mut round = 0;
        while level.len() > COMPOSE_MAX {
            let mut next = Vec::new();
            for (index, group) in level.chunks(COMPOSE_MAX).enumerate() {
                let name = format!("{}/c{round}-{index:06}", self.prefix);
                self.client.compose(group, &name).await.map_err(|e| error(&name, e))?;
                made.push(name.clone());
                next.push(name);
            }
            level = next;
            round += 1;
        }
        let result = self.client.compose(&level, &self.target).await;
        self.delete_parts(&parts).await;
        self.delete_parts(&made).await;
        let info = result.map_err(|e| error(&self.target, e))?;
        Ok(put_result(&info))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let parts: Vec<String> = (0..self.count).map(|i| self.part_name(i)).collect();
        self.delete_parts(&parts).await;
        Ok(())
    }
}
