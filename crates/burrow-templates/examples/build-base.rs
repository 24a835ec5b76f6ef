//! Builds the default template `base` into a data dir (default `/var/lib/burrow`).
//!
//! `cargo run -p burrow-templates --example build-base -- [DATA_DIR]`

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let data_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/burrow"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = burrow_templates::TemplateStore::open(&data_dir)?;
        if let Ok(existing) = store.get(burrow_templates::BASE_TEMPLATE) {
            println!("base already exists: {:?}", existing.layers);
            return Ok(());
        }
        let template = store
            .build_base(|p| match p.fraction {
                Some(f) => println!("[{:>3.0}%] {}: {}", f * 100.0, p.phase, p.message),
                None => println!("[    ] {}: {}", p.phase, p.message),
            })
            .await?;
        println!(
            "built {} ({} bytes): {:?}",
            template.name, template.size_bytes, template.layers
        );
        Ok(())
    })
}
