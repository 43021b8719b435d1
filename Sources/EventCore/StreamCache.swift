import Foundation
import Synchronization

/// The streams a ``CommandExecutor`` has read and written, kept so that the next command on them asks the store
/// only for what is new (``EventStore/read(_:after:)``), or, for streams nobody else writes, nothing at all.
///
/// Events are immutable and a stream's versions have no gaps, so the cached events followed by the new ones
/// are exactly the stream; a read that does not fit (a version behind the cached one, a gap) drops the entries
/// and reads the whole streams.
///
/// With ``Verification/onRead`` every command still reads from the store, in the same round trip as without a
/// cache, and gets the events appended since by anyone. With ``Verification/onAppend`` (the default) a stream
/// this executor has read is trusted until a decision on it meets a version conflict, and again once it has been
/// read again: a command whose streams are all trusted decides on the cached events without reading,
/// and its append's expected versions check them. If another writer got in between, the append fails with a
/// version conflict, the streams lose their trust, and the command is decided again at once on a fresh read;
/// a decision that fails or decides nothing on trusted streams is also made again on a fresh read before it
/// counts. A process advanced by one worker then costs one round trip per command.
///
/// Trust pays only while other writers seldom get in between: a decision on a stale stream costs a conflict and
/// two more round trips. So the cache also keeps a moving average of how often a check (a read of held streams,
/// or the append of a decision made without reading) finds that another writer got in first, and stops trusting
/// while that exceeds a quarter: where several workers take turns on the same processes, every command reads
/// what is new, as with ``Verification/onRead``.
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
        /// Commands decided on trusted streams without reading them.
        public var readsSkipped = 0
        /// Of those, the ones another writer had got in before: their append conflicted and they were decided again.
        public var trustBroken = 0
        /// The moving average (over about the last 32 checks) of the share of checks that found another writer
        /// had got in first. Above ``StreamCache/trustLimit`` no stream is trusted.
        public var recentStaleness = 0.0

        /// All zero: a cache that has done nothing yet.
        public init() {}
    }

    /// When a command's cached streams are checked against the store.
    public enum Verification: Sendable, Hashable {
        /// Every command reads what is new in its streams before it decides.
        case onRead
        /// A command whose streams all went unchanged by others since their last check decides without reading;
        /// its append checks them.
        case onAppend
    }

    /// The share of stale checks above which nothing is trusted: a stale decision costs two more round trips than
    /// a read saves, so trust pays below a half; a quarter leaves room for the conflicts' own cost.
    public static let trustLimit = 0.25

    /// The estimated size above which the least recently used streams are dropped.
    public let maximumBytes: Int
    /// When cached streams are checked against the store.
    public let verification: Verification

    /// The events of one stream, complete up to `version`.
    struct Entry {
        var events: [StoredEvent]
        var version: Int
        var bytes: Int
        var lastUse: UInt64
        /// Whether the last check found that nobody else had appended since this executor last used the stream.
        var trusted: Bool
        /// The events decoded as each event type a command folded them into (`[Event?]`, one per event from the
        /// first, `nil` where the type does not handle the event), so a fold decodes each event once per type.
        var decoded: [ObjectIdentifier: DecodedEvents] = [:]
    }

    /// Events decoded as one type: a prefix of a stream's events, each decoded or `nil`.
    struct DecodedEvents: @unchecked Sendable {
        /// An `[Event?]` of the type the entry is keyed by. Only ever read as that type; never mutated once shared.
        var values: Any
        var count: Int
    }

    /// The estimated memory of one decoded event.
    static let decodedEventBytes = 96

    private struct State {
        var entries: [StreamID: Entry] = [:]
        var tick: UInt64 = 0
        var statistics = Statistics()
    }

    private let state = Mutex(State())

    /// Creates a cache holding up to about `maximumBytes` of events (payloads, type names and metadata, plus a
    /// fixed overhead per event), checking its streams as `verification` says.
    public init(maximumBytes: Int = 16 << 20, verification: Verification = .onAppend) {
        self.maximumBytes = max(0, maximumBytes)
        self.verification = verification
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

    /// The whole of `streams` as a snapshot, if every one of them is held and trusted; counts a skipped read.
    func trustedSnapshot(_ streams: [StreamID]) -> StreamsSnapshot? {
        guard verification == .onAppend else { return nil }
        return state.withLock { state in
            guard state.statistics.recentStaleness <= Self.trustLimit,
                  let snapshot = Self.snapshot(streams, in: &state, trustedOnly: true)
            else { return nil }
            state.statistics.readsSkipped += 1
            return snapshot
        }
    }

    /// The whole of `streams` as the cache holds them, trusted or not, if every one of them is held. What it
    /// holds may be behind the store, never ahead of it: events after these may exist, none of these can change.
    func heldSnapshot(_ streams: [StreamID]) -> StreamsSnapshot? {
        state.withLock { Self.snapshot(streams, in: &$0, trustedOnly: false) }
    }

    private static func snapshot(_ streams: [StreamID], in state: inout State, trustedOnly: Bool) -> StreamsSnapshot? {
        var events: [StoredEvent] = []
        var versions: [StreamID: Int] = [:]
        for stream in streams {
            guard let entry = state.entries[stream], entry.trusted || !trustedOnly else { return nil }
            events.append(contentsOf: entry.events)
            versions[stream] = entry.version
        }
        state.tick &+= 1
        for stream in streams { state.entries[stream]?.lastUse = state.tick }
        state.statistics.hits += streams.count
        if streams.count > 1 { events.sort { $0.globalPosition < $1.globalPosition } }
        return StreamsSnapshot(events: events, versions: versions)
    }

    /// Marks whether `stream`, held at `version`, was found unchanged by others at its last check.
    func setTrusted(_ stream: StreamID, at version: Int, _ trusted: Bool) {
        state.withLock { state in
            if state.entries[stream]?.version == version { state.entries[stream]?.trusted = trusted }
        }
    }

    /// The events of `streams` already decoded as `Event`: for each stream held, the decoded values of its first
    /// events in version order (possibly fewer than it holds).
    func decoded<Event: DomainEvent>(_ streams: [StreamID], as type: Event.Type) -> [StreamID: [Event?]] {
        let key = ObjectIdentifier(type)
        return state.withLock { state in
            var found: [StreamID: [Event?]] = [:]
            for stream in streams {
                if let values = state.entries[stream]?.decoded[key]?.values as? [Event?] { found[stream] = values }
            }
            return found
        }
    }

    /// Keeps `values`, the events of `stream` from version `first` on decoded as `Event`, if they continue what is
    /// kept for that type and the cache holds those events.
    func keepDecoded<Event: DomainEvent>(_ stream: StreamID, from first: Int, _ values: [Event?], as type: Event.Type) {
        guard !values.isEmpty else { return }
        let key = ObjectIdentifier(type)
        state.withLock { state in
            guard var entry = state.entries[stream], first + values.count - 1 <= entry.events.count else { return }
            // The append copies the kept array (folds in flight still hold it): linear in the stream's length, but
            // a copy of decoded values, not a decoding.
            var kept = entry.decoded[key].flatMap { $0.values as? [Event?] } ?? []
            guard kept.count == first - 1 else { return }
            kept.append(contentsOf: values)
            entry.decoded[key] = DecodedEvents(values: kept, count: kept.count)
            let added = values.count * Self.decodedEventBytes
            entry.bytes += added
            state.entries[stream] = entry
            state.statistics.bytes += added
            evictIfNeeded(&state)
        }
    }

    /// Withdraws trust from `streams` after a decision made on them met a version conflict.
    func distrust(_ streams: [StreamID]) {
        state.withLock { state in
            for stream in streams { state.entries[stream]?.trusted = false }
            state.statistics.trustBroken += 1
            Self.observe(stale: true, in: &state)
        }
    }

    /// Counts a check of held streams: `stale` if another writer had appended to one of them since this executor
    /// last used it.
    func observe(stale: Bool) {
        state.withLock { Self.observe(stale: stale, in: &$0) }
    }

    private static func observe(stale: Bool, in state: inout State) {
        state.statistics.recentStaleness += ((stale ? 1 : 0) - state.statistics.recentStaleness) / 32
    }

    /// Holds `events`, the whole of `stream` up to `version`, unless the cache already holds a later version.
    /// It was just read, so it is trusted (while checks stay mostly fresh, see ``trustLimit``) until a decision on
    /// it conflicts.
    func record(_ stream: StreamID, events: [StoredEvent], version: Int) {
        let bytes = Self.estimatedBytes(events)
        state.withLock { state in
            if let held = state.entries[stream], held.version >= version { return }
            guard bytes <= maximumBytes else {
                remove(stream, from: &state)
                return
            }
            state.tick &+= 1
            var entry = Entry(events: events, version: version, bytes: bytes, lastUse: state.tick, trusted: true)
            // The same stream read further: what was decoded of its first events still holds.
            if let held = state.entries[stream], let last = held.events.last, held.events.count <= events.count,
               events[held.events.count - 1].id == last.id {
                entry.decoded = held.decoded
                entry.bytes += held.decoded.values.reduce(0) { $0 + $1.count * Self.decodedEventBytes }
            }
            let previous = state.entries.updateValue(entry, forKey: stream)
            state.statistics.bytes += entry.bytes - (previous?.bytes ?? 0)
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

    /// Forgets every stream (the statistics stay): for a worker gone idle, whose cached streams other workers may
    /// be changing meanwhile, to give their memory back.
    public func removeAll() {
        state.withLock { state in
            state.entries = [:]
            state.statistics.bytes = 0
            state.statistics.streams = 0
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
