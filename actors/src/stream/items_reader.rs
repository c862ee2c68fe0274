//! The source of a DynamoDB export: `segments` parallel scan segments of a (temporary)
//! table, each page's items as DynamoDB JSON lines, cut into the pipeline's chunks. Bounded:
//! the segments feed one channel of `capacity` pages, and chunks go out through the
//! pipeline's own bounded channel.

use std::sync::{Arc, Mutex};

use bunker_protocol::archive::ItemStats;
use tokio::sync::mpsc;

use super::{SourceItem, StreamError};
use crate::ports::Tables;
use crate::retry::RetryPolicy;

/// Opens a reader over `table`: chunks of `chunk` bytes (the last shorter) of newline-ended
/// item lines; `stats` holds the item count when the stream ends.
pub fn items_reader(
    tables: Arc<dyn Tables>,
    table: String,
    segments: u32,
    chunk: usize,
    capacity: usize,
    stats: Arc<Mutex<ItemStats>>,
) -> mpsc::Receiver<Result<SourceItem, StreamError>> {
    let (out, rx) = mpsc::channel(capacity.max(1));
    let (pages_tx, pages) = mpsc::channel::<Result<Vec<String>, StreamError>>(capacity.max(1));
    for segment in 0..segments.max(1) {
        let (tables, table, tx) = (tables.clone(), table.clone(), pages_tx.clone());
        tokio::spawn(async move { scan_segment(tables.as_ref(), &table, segment, segments.max(1), tx).await });
    }
    drop(pages_tx);
    tokio::spawn(chunk_lines(pages, out, chunk, stats));
    rx
}

/// Sends every page of one segment, in order; stops at the first error (sent on).
async fn scan_segment(
    tables: &dyn Tables,
    table: &str,
    segment: u32,
    segments: u32,
    tx: mpsc::Sender<Result<Vec<String>, StreamError>>,
) {
    let mut start = None;
    loop {
        let page = RetryPolicy::AWS
            .call("scan", |_| {}, || tables.scan(table, segment, segments, start.clone()))
            .await
            .map_err(|e| StreamError::port(format!("scanning {table} (segment {segment})"), e));
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let _closed = tx.send(Err(e)).await;
                return;
            }
        };
        if tx.send(Ok(page.items)).await.is_err() {
            return;
        }
        match page.next {
            Some(next) => start = Some(next),
            None => return,
        }
    }
}

/// Joins the pages' lines (each ended by a newline) and cuts the stream into chunks of
/// exactly `chunk` bytes, as the pipeline wants; a line may span two chunks.
async fn chunk_lines(
    mut pages: mpsc::Receiver<Result<Vec<String>, StreamError>>,
    out: mpsc::Sender<Result<SourceItem, StreamError>>,
    chunk: usize,
    stats: Arc<Mutex<ItemStats>>,
) {
    let (mut buf, mut offset, mut items) = (Vec::with_capacity(chunk), 0u64, 0u64);
    while let Some(page) = pages.recv().await {
        let lines = match page {
            Ok(l) => l,
            Err(e) => {
                let _closed = out.send(Err(e)).await;
                return;
            }
        };
        for line in lines {
            items += 1;
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            while buf.len() >= chunk {
                let rest = buf.split_off(chunk);
                let bytes = std::mem::replace(&mut buf, rest);
                if out.send(Ok(SourceItem::Data { offset, bytes })).await.is_err() {
                    return;
                }
                offset += chunk as u64;
            }
        }
    }
    stats.lock().expect("item stats").items = items;
    if !buf.is_empty() {
        let _closed = out.send(Ok(SourceItem::Data { offset, bytes: buf })).await;
    }
}
