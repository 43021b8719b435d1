import CoreMetrics
import EventCore
import Synchronization

/// The stream cache's figures as metrics: `eventcore_stream_cache_hits_total` and
/// `eventcore_stream_cache_misses_total` (streams a command found, or did not find, in the cache),
/// `eventcore_stream_cache_evictions_total`, and the gauges `eventcore_stream_cache_streams` and
/// `eventcore_stream_cache_bytes` (estimated). Call ``update()`` before the metrics are read.
public final class StreamCacheMetrics: Sendable {
    private let cache: StreamCache
    private let factory: any MetricsFactory
    private let reported = Mutex(StreamCache.Statistics())

    /// Metrics of `cache`, made by `factory`.
    public init(cache: StreamCache, factory: any MetricsFactory) {
        self.cache = cache
        self.factory = factory
    }

    /// Brings the metrics up to the cache's current figures.
    public func update() {
        let now = cache.statistics
        let before = reported.withLock { reported in
            let before = reported
            reported = now
            return before
        }
        Counter(label: "eventcore_stream_cache_hits_total", factory: factory).increment(by: max(0, now.hits - before.hits))
        Counter(label: "eventcore_stream_cache_misses_total", factory: factory).increment(by: max(0, now.misses - before.misses))
        Counter(label: "eventcore_stream_cache_evictions_total", factory: factory).increment(by: max(0, now.evictions - before.evictions))
        Gauge(label: "eventcore_stream_cache_streams", factory: factory).record(now.streams)
        Gauge(label: "eventcore_stream_cache_bytes", factory: factory).record(now.bytes)
    }
}
