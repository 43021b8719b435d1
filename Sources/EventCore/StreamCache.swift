import Foundation
import Synchronization

/// The streams a ``CommandExecutor`` has read and written, kept so that the next command on them asks the store
/// only for what is new (``EventStore/read(_:after:)``) instead of reading every event again.
///
/// What it holds is never trusted for a decision on its own: every command still reads from the store, in the
/// same round trip as without a cache, and gets the events appended since by anyone. It only saves the store
/// from sending, and the executor from decoding rows, for the events it already has. Events are immutable and
/// a stream's versions have no gaps, so the cached events followed by the new ones are exactly the stream; a
/// read that does not fit (a version behind the cached one, a gap) drops the entry and reads the whole stream.
///
/// Bounded by an estimate of the bytes its events take; the streams used least recently go first. Share one
/// cache per store (a cache filled from one store must not serve another). Thread-safe.
public final class StreamCache: Sendable {
    /// What the cache has done since it was created.
    public struct Statistics: Sendable, Hashable {
        /// Streams found in the cache when a command read them.
        public var hits = 0
        /// Streams a command read that were not in the cache.
        public var misses = 0
        /// Streams dropped to stay within ``StreamCache/maximumBytes``.
        public var evictions = 0
        /// Streams held now.
        public var streams = 0
        /// The estimated bytes held now.
        public var bytes = 0

        /// All zero: a cache that has done nothing yet.
        public init() {}
    }

    /// The estimated size above which the least recently used streams are dropped.
    public let maximumBytes: Int

    /// The events of one stream, complete up to `version`.
    struct Entry {
        var events: [StoredEvent]
        var version: Int
        var bytes: Int
        var lastUse: UInt64
    }

    private struct State {
        var entries: [StreamID: Entry] = [:]
        var tick: UInt64 = 0
        var statistics = Statistics()
    }

    private let state = Mutex(State())

    /// Creates a cache holding up to about `maximumBytes` of events (payloads, type names and metadata, plus a
    /// fixed overhead per event).
    public init(maximumBytes: Int = 16 << 20) {
        self.maximumBytes = max(0, maximumBytes)
    }

    /// What the cache has done so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The held events and version of each of `streams` that is cached, counting hits and misses.
    func lookup(_ streams: [StreamID]) -> [StreamID: (events: [StoredEvent], version: Int)] {
        state.withLock { state in
            var found: [StreamID: (events: [StoredEvent], version: Int)] = [:]
            state.tick &+= 1
            for stream in streams {
                if let entry = state.entries[stream] {
                    state.entries[stream]?.lastUse = state.tick
                    found[stream] = (entry.events, entry.version)
                    state.statistics.hits += 1
                } else {
                    state.statistics.misses += 1
                }
            }
            return found
        }
    }

    /// Holds `events`, the whole of `stream` up to `version`, unless the cache already holds a later version.
    func record(_ stream: StreamID, events: [StoredEvent], version: Int) {
        let bytes = Self.estimatedBytes(events)
        state.withLock { state in
            if let held = state.entries[stream], held.version >= version { return }
            guard bytes <= maximumBytes else {
                remove(stream, from: &state)
                return
            }
            state.tick &+= 1
            let previous = state.entries.updateValue(Entry(events: events, version: version, bytes: bytes, lastUse: state.tick), forKey: stream)
            state.statistics.bytes += bytes - (previous?.bytes ?? 0)
            state.statistics.streams = state.entries.count
            evictIfNeeded(&state)
        }
    }

    /// Extends the held `stream` with `events` just appended after `version`, if the cache holds it at exactly
    /// that version; otherwise leaves it for the next read to bring up to date.
    func extend(_ stream: StreamID, from version: Int, with events: [StoredEvent], to newVersion: Int) {
        guard newVersion == version + events.count, events.first.map({ $0.streamVersion == version + 1 }) ?? true else { return }
        let bytes = Self.estimatedBytes(events)
        state.withLock { state in
            guard var entry = state.entries[stream], entry.version == version else { return }
            state.tick &+= 1
            entry.events.append(contentsOf: events)
            entry.version = newVersion
            entry.bytes += bytes
            entry.lastUse = state.tick
            state.entries[stream] = entry
            state.statistics.bytes += bytes
            evictIfNeeded(&state)
        }
    }

    /// Forgets `stream`.
    func remove(_ stream: StreamID) {
        state.withLock { remove(stream, from: &$0) }
    }

    private func remove(_ stream: StreamID, from state: inout State) {
        if let removed = state.entries.removeValue(forKey: stream) {
            state.statistics.bytes -= removed.bytes
            state.statistics.streams = state.entries.count
        }
    }

    /// Above the bound, drops the least recently used streams down to three quarters of it, so the sort this
    /// takes is paid once per many insertions.
    private func evictIfNeeded(_ state: inout State) {
        guard state.statistics.bytes > maximumBytes else { return }
        let target = maximumBytes / 4 * 3
        for (stream, _) in state.entries.sorted(by: { $0.value.lastUse < $1.value.lastUse }) {
            guard state.statistics.bytes > target else { break }
            remove(stream, from: &state)
            state.statistics.evictions += 1
        }
    }

    /// An estimate of the memory `events` take: their variable parts and a fixed overhead each.
    static func estimatedBytes(_ events: [StoredEvent]) -> Int {
        var total = 0
        for event in events {
            let metadata = event.metadata
            total += 192 + event.payload.count + event.eventType.utf8.count + event.streamID.rawValue.utf8.count
                + (metadata.correlationID?.utf8.count ?? 0) + (metadata.causationID?.utf8.count ?? 0)
                + (metadata.sourceMessageID?.utf8.count ?? 0) + (metadata.traceparent?.utf8.count ?? 0)
        }
        return total
    }
}
