//! Feeds a peer stream's bytes to `weft_cluster::peer_stream::read_frame`, frame after
//! frame until it stops, and each frame's JSON payload to the wire types it carries,
//! without a running raft: a request tag's payload to what `Node::handle_peer` decodes
//! for that RPC (openraft's `AppendEntriesRequest`, `(pre_vote, VoteRequest)`, the
//! snapshot triple, `TransferLeaderRequest` of weft's type config, `ProbeRequest`,
//! `LeaderRequest`), and an OK reply's payload to every reply type a caller decodes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use serde::de::DeserializeOwned;
use weft_cluster::node::{ForwardError, LeaderReply, LeaderRequest, ProbeReply, ProbeRequest};
use weft_cluster::peer::WireResult;
use weft_cluster::peer_stream::{read_frame, REPLY_OK};
use weft_cluster::types::TypeConfig;
use weft_cluster::RpcKind;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fn de<T: DeserializeOwned>(payload: &[u8]) {
    let _ = serde_json::from_slice::<T>(payload);
}

fn request(kind: RpcKind, payload: &[u8]) {
    match kind {
        RpcKind::Append => de::<AppendEntriesRequest<TypeConfig>>(payload),
        RpcKind::Vote => de::<(bool, VoteRequest<TypeConfig>)>(payload),
        RpcKind::Snapshot => {
            de::<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, Vec<u8>)>(payload)
        }
        RpcKind::TransferLeader => de::<TransferLeaderRequest<TypeConfig>>(payload),
        RpcKind::Probe => de::<ProbeRequest>(payload),
        RpcKind::Leader => de::<LeaderRequest>(payload),
    }
}

fn reply(payload: &[u8]) {
    de::<WireResult<AppendEntriesResponse<TypeConfig>>>(payload);
    de::<WireResult<VoteResponse<TypeConfig>>>(payload);
    de::<WireResult<SnapshotResponse<TypeConfig>>>(payload);
    de::<WireResult<TransferLeaderResponse<TypeConfig>>>(payload);
    de::<ProbeReply>(payload);
    de::<Result<LeaderReply, ForwardError>>(payload);
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let mut stream = data;
        while let Ok(Some((tag, payload))) = read_frame(&mut stream).await {
            if tag == REPLY_OK {
                reply(&payload);
            }
            if let Some(kind) = RpcKind::from_tag(tag) {
                request(kind, &payload);
            }
        }
    });
});
