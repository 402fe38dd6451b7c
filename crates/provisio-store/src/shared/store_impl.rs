//! [`impl_store!`]: the [`Store`](crate::Store) trait mapped onto a
//! backend's [`SqlCore`](super::SqlCore) and its own `queue` and `replays`
//! modules, once for both backends.

/// Implements [`Store`](crate::Store) for a backend holding its pools in a
/// `core: SqlCore<_>` field, so the mapping of the trait onto the code is
/// written once for both backends. Every method is the shared core's, but
/// for the methods given (`single_node`, `watch`) and those each backend
/// writes its own way, in modules of the same names in both, each taking the
/// store: `queue::{emit, claim_due, record}` (claims, locks, emit and record
/// batches) and `replays::{start_replay, cancel_replay}` (replay jobs).
macro_rules! impl_store {
    ($backend:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::Store for $backend {
            $($own)*

            async fn emit(
                &self,
                batch: &[NewEvent],
                claim: Option<&Claim<'_>>,
            ) -> StoreResult<Emitted> {
                queue::emit(self, batch, claim).await
            }

            async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Claimed> {
                queue::claim_due(self, claim).await
            }

            async fn record(
                &self,
                attempts: &[AttemptResult],
                executions: &[ExecutionRecord],
            ) -> StoreResult<RecordOutcome> {
                queue::record(self, attempts, executions).await
            }

            async fn redeliver(
                &self,
                delivery_id: &str,
                now_ms: i64,
            ) -> StoreResult<(DeliveryRecord, Redelivery)> {
                self.core.redeliver(delivery_id, now_ms).await
            }

            async fn get_delivery(&self, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>> {
                self.core.get_delivery(delivery_id).await
            }

            async fn skip_blocked(
                &self,
                delivery_id: &str,
                who: &str,
                now_ms: i64,
            ) -> StoreResult<(DeliveryRecord, RecordOutcome)> {
                self.core.skip_blocked(delivery_id, who, now_ms).await
            }

            async fn conflate_lines(&self, handler_id: i64, now_ms: i64) -> StoreResult<u64> {
                self.core.conflate_lines(handler_id, now_ms).await
            }

            async fn start_replay(&self, job: &NewReplay) -> StoreResult<ReplayRecord> {
                replays::start_replay(self, job).await
            }

            async fn cancel_replay(
                &self,
                id: &str,
                now_ms: i64,
            ) -> StoreResult<(ReplayRecord, u64)> {
                replays::cancel_replay(self, id, now_ms).await
            }

            async fn get_replay(&self, id: &str) -> StoreResult<Option<ReplayRecord>> {
                self.core.get_replay(id).await
            }

            async fn list_replays(&self, page: Page) -> StoreResult<(Vec<ReplayRecord>, u64)> {
                self.core.list_replays(page).await
            }

            async fn handler_figures(&self, since_ms: i64, bucket_ms: i64) -> StoreResult<Figures> {
                self.core.handler_figures(since_ms, bucket_ms).await
            }

            async fn call_p95(
                &self,
                handler_ids: &[i64],
                since_ms: i64,
                sample: u32,
            ) -> StoreResult<std::collections::HashMap<i64, u32>> {
                self.core.call_p95(handler_ids, since_ms, sample).await
            }

            async fn ping(&self) -> StoreResult<()> {
                self.core.ping().await
            }

            async fn create_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
                self.core.create_token(name, hash).await
            }

            async fn put_token(&self, name: &str, hash: &TokenHash) -> StoreResult<TokenRecord> {
                self.core.put_token(name, hash).await
            }

            async fn find_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
                self.core.find_token(hash).await
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
                self.core.list_tokens().await
            }

            async fn revoke_token(&self, token: TokenRef<'_>) -> StoreResult<bool> {
                self.core.revoke_token(token).await
            }

            async fn seed_event_types(
                &self,
                types: &[provisio_core::catalog::EventType],
            ) -> StoreResult<()> {
                self.core.seed_event_types(types).await
            }

            async fn list_event_types(&self) -> StoreResult<Vec<provisio_core::catalog::EventType>> {
                self.core.list_event_types().await
            }

            async fn insert_event_type(
                &self,
                event_type: &provisio_core::catalog::EventType,
            ) -> StoreResult<()> {
                self.core.insert_event_type(event_type).await
            }

            async fn insert_handler(
                &self,
                spec: &provisio_core::handler::HandlerSpec,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.insert_handler(spec).await
            }

            async fn get_handler(
                &self,
                id: i64,
            ) -> StoreResult<Option<provisio_core::handler::Handler>> {
                self.core.get_handler(id).await
            }

            async fn update_handler(
                &self,
                id: i64,
                spec: &provisio_core::handler::HandlerSpec,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.update_handler(id, spec).await
            }

            async fn rotate_handler_secret(
                &self,
                id: i64,
            ) -> StoreResult<provisio_core::handler::Handler> {
                self.core.rotate_handler_secret(id).await
            }

            async fn delete_handler(&self, id: i64) -> StoreResult<bool> {
                self.core.delete_handler(id).await
            }

            async fn list_handlers(
                &self,
                filter: &HandlerFilter,
                page: Page,
            ) -> StoreResult<(Vec<provisio_core::handler::Handler>, u64)> {
                self.core.list_handlers(filter, page).await
            }

            async fn all_handlers(&self) -> StoreResult<Vec<provisio_core::handler::Handler>> {
                self.core.all_handlers().await
            }

            async fn change_pause(
                &self,
                id: i64,
                change: PauseChange<'_>,
            ) -> StoreResult<Option<provisio_core::handler::Handler>> {
                self.core.change_pause(id, change).await
            }

            async fn take_probe(&self, id: i64, now_ms: i64, next_ms: i64) -> StoreResult<bool> {
                self.core.take_probe(id, now_ms, next_ms).await
            }


            async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
                self.core.next_due_ms().await
            }

            async fn settle_interrupted(
                &self,
                now_ms: i64,
                leases_ending_before: i64,
            ) -> StoreResult<u64> {
                self.core.settle_interrupted(now_ms, leases_ending_before).await
            }

            async fn get_event(
                &self,
                id: &str,
            ) -> StoreResult<Option<(provisio_core::event::Event, Vec<DeliveryRecord>)>> {
                self.core.get_event(id).await
            }

            async fn recent_events(
                &self,
                pattern: &provisio_core::catalog::EventPattern,
                limit: u32,
            ) -> StoreResult<Vec<provisio_core::event::Event>> {
                self.core.recent_events(pattern, limit).await
            }

            async fn filtered_out(&self, event_id: &str) -> StoreResult<Vec<FilteredOut>> {
                self.core.filtered_out(event_id).await
            }

            async fn waiting_behind(
                &self,
                delivery_id: &str,
                limit: u32,
            ) -> StoreResult<Vec<DeliveryRecord>> {
                self.core.waiting_behind(delivery_id, limit).await
            }

            async fn queue_stats(&self) -> StoreResult<QueueStats> {
                self.core.queue_stats().await
            }

            async fn list_executions(
                &self,
                filter: &ExecutionFilter,
                page: Page,
            ) -> StoreResult<(Vec<ExecutionRecord>, u64)> {
                self.core.list_executions(filter, page).await
            }

            async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
                self.core.get_execution(id).await
            }

            async fn prune(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
                self.core.prune(before_ms, batch).await
            }

            async fn create_session(
                &self,
                id_hash: &[u8; 32],
                session: &SessionRecord,
            ) -> StoreResult<()> {
                self.core.create_session(id_hash, session).await
            }

            async fn find_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
                self.core.find_session(id_hash).await
            }

            async fn delete_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<()> {
                self.core.delete_session(id_hash, now_ms).await
            }
        }
    };
}
pub(crate) use impl_store;
