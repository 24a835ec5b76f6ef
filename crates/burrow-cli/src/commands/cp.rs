//! `burrow cp`: host ↔ sandbox copies of single files (`ID:PATH` names a sandbox path).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::args::remote_path;
use crate::client::ApiClient;

#[derive(Args)]
pub struct CpArgs {
    /// Source: a host path, or ID:PATH inside a sandbox (`-` for stdin).
    pub src: String,
    /// Destination: a host path, or ID:PATH inside a sandbox (`-` for stdout).
    pub dst: String,
}

pub async fn run(api: &ApiClient, args: CpArgs) -> anyhow::Result<ExitCode> {
    match (remote_path(&args.src), remote_path(&args.dst)) {
        (None, Some((id, path))) => upload(api, &args.src, id, path).await?,
        (Some((id, path)), None) => download(api, id, path, &args.dst).await?,
        (Some(_), Some(_)) => {
            bail!("copying between two sandboxes is not supported; copy through the host")
        }
        (None, None) => bail!("one side must be a sandbox path written ID:PATH"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn upload(api: &ApiClient, src: &str, id: &str, path: &str) -> anyhow::Result<()> {
    let body = if src == "-" {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf).await?;
        reqwest::Body::from(buf)
    } else {
        let meta = tokio::fs::metadata(src)
            .await
            .with_context(|| format!("reading {src}"))?;
        if meta.is_dir() {
            bail!("{src} is a directory; burrow cp copies single files");
        }
        let file = tokio::fs::File::open(src)
            .await
            .with_context(|| format!("opening {src}"))?;
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ))
    };
    let target = if path.ends_with('/') {
        let name = Path::new(src)
            .file_name()
            .context("the source has no file name")?;
        format!("{path}{}", name.to_string_lossy())
    } else {
        path.to_string()
    };
    api.send(
        api.request(reqwest::Method::PUT, &format!("/v1/sandboxes/{id}/files"))
            .query(&[("path", target.as_str())])
            .body(body),
    )
    .await?;
    Ok(())
}

async fn download(api: &ApiClient, id: &str, path: &str, dst: &str) -> anyhow::Result<()> {
    let resp = api
        .send(
            api.request(reqwest::Method::GET, &format!("/v1/sandboxes/{id}/files"))
                .query(&[("path", path)]),
        )
        .await?;
    let mut stream = resp.bytes_stream();
    if dst == "-" {
        let mut out = tokio::io::stdout();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?).await?;
        }
        out.flush().await?;
        return Ok(());
    }
    let mut target = PathBuf::from(dst);
    if target.is_dir() {
        let name = Path::new(path)
            .file_name()
            .context("the sandbox path has no file name")?;
        target.push(name);
    }
    let tmp = target.with_extension("burrow-partial");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    tokio::fs::rename(&tmp, &target)
        .await
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}
