import EventCore
import Synchronization

/// Wraps a store and makes some calls fail, by script or by a seeded random draw, so executors and workers
/// can be tested against an unreliable store. The same seed always gives the same faults for the same calls.
public final class FaultInjectingEventStore: EventStore {
    /// A fault to inject into one call.
    public enum Fault: Sendable, Hashable {
        /// The append fails with `storeUnavailable` before reaching the store: nothing is written.
        case unavailableBeforeAppend
        /// The append reaches the store and commits, then fails with `storeUnavailable`: the caller cannot tell
        /// whether it committed (only an idempotency key can).
        case unavailableAfterAppend
        /// The append fails with a version conflict without reaching the store.
        case conflict
        /// A read fails with `storeUnavailable`.
        case readFailure
    }

    /// Probabilities of random faults, each between 0 and 1, drawn from a seeded generator.
    public struct FaultRates: Sendable, Hashable {
        /// Chance of ``Fault/unavailableBeforeAppend`` per append.
        public var unavailableBeforeAppend: Double
        /// Chance of ``Fault/unavailableAfterAppend`` per append.
        public var unavailableAfterAppend: Double
        /// Chance of ``Fault/conflict`` per append.
        public var conflict: Double
        /// Chance of ``Fault/readFailure`` per read.
        public var readFailure: Double

        /// Creates rates; all zero by default.
        public init(unavailableBeforeAppend: Double = 0, unavailableAfterAppend: Double = 0, conflict: Double = 0, readFailure: Double = 0) {
            self.unavailableBeforeAppend = unavailableBeforeAppend
            self.unavailableAfterAppend = unavailableAfterAppend
            self.conflict = conflict
            self.readFailure = readFailure
        }
    }

    /// How many calls went through and how many faults were injected.
    public struct Statistics: Sendable, Hashable {
        /// Appends forwarded to the wrapped store.
        public var appendsForwarded = 0
        /// Reads forwarded to the wrapped store (``read(_:)`` and ``read(_:after:)``).
        public var readsForwarded = 0
        /// Events those reads returned.
        public var eventsRead = 0
        /// Idempotency keys looked up through ``appendResult(forIdempotencyKey:)``.
        public var keyLookups = 0
        /// Version conflicts the wrapped store itself reported.
        public var storeConflicts = 0
        /// Faults injected, by kind.
        public var injected: [Fault: Int] = [:]
    }

    private struct State {
        var generator: SplitMix64
        var scriptedAppendFaults: [Fault] = []
        var scriptedReadFaults: [Fault] = []
        var statistics = Statistics()
    }

    /// The wrapped store.
    public let base: any EventStore
    private let rates: FaultRates
    private let beforeAppend: (@Sendable (AppendRequest) async throws -> Void)?
    private let state: Mutex<State>

    /// Wraps `base`.
    /// - Parameters:
    ///   - base: the store that does the real work.
    ///   - seed: the seed of the random faults.
    ///   - rates: chances of random faults.
    ///   - beforeAppend: runs before each append is forwarded, for example to let another writer interfere.
    public init(
        wrapping base: any EventStore,
        seed: UInt64 = 0,
        rates: FaultRates = FaultRates(),
        beforeAppend: (@Sendable (AppendRequest) async throws -> Void)? = nil
    ) {
        self.base = base
        self.rates = rates
        self.beforeAppend = beforeAppend
        self.state = Mutex(State(generator: SplitMix64(seed: seed)))
    }

    /// The wrapped store's.
    public var preferredExecutor: (any TaskExecutor)? { base.preferredExecutor }

    /// Makes the next appends fail with `faults`, in order, before any random fault is drawn.
    public func injectIntoNextAppends(_ faults: Fault...) {
        state.withLock { $0.scriptedAppendFaults.append(contentsOf: faults) }
    }

    /// Makes the next reads fail with ``Fault/readFailure``, `count` times.
    public func failNextReads(_ count: Int) {
        state.withLock { $0.scriptedReadFaults.append(contentsOf: Array(repeating: .readFailure, count: count)) }
    }

    /// What happened so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    private func drawAppendFault() -> Fault? {
        state.withLock { state in
            if !state.scriptedAppendFaults.isEmpty {
                let fault = state.scriptedAppendFaults.removeFirst()
                state.statistics.injected[fault, default: 0] += 1
                return fault
            }
            let draw = state.generator.nextUnit()
            let fault: Fault?
            if draw < rates.unavailableBeforeAppend {
                fault = .unavailableBeforeAppend
            } else if draw < rates.unavailableBeforeAppend + rates.unavailableAfterAppend {
                fault = .unavailableAfterAppend
            } else if draw < rates.unavailableBeforeAppend + rates.unavailableAfterAppend + rates.conflict {
                fault = .conflict
            } else {
                fault = nil
            }
            if let fault { state.statistics.injected[fault, default: 0] += 1 }
            return fault
        }
    }

    private func drawReadFault() -> Bool {
        state.withLock { state in
            if !state.scriptedReadFaults.isEmpty {
                state.scriptedReadFaults.removeFirst()
                state.statistics.injected[.readFailure, default: 0] += 1
                return true
            }
            guard rates.readFailure > 0, state.generator.nextUnit() < rates.readFailure else { return false }
            state.statistics.injected[.readFailure, default: 0] += 1
            return true
        }
    }

    private static func unavailable(_ what: String) -> EventStoreError {
        EventStoreError(.storeUnavailable, "injected fault: \(what)")
    }

    /// Reads through the wrapped store unless a read fault is due.
    public func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        if drawReadFault() { throw Self.unavailable("the read failed") }
        state.withLock { $0.statistics.readsForwarded += 1 }
        let snapshot = try await base.read(streams)
        state.withLock { $0.statistics.eventsRead += snapshot.events.count }
        return snapshot
    }

    /// Forwards the read of what is new to the wrapped store, subject to the same read faults as ``read(_:)``.
    public func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot {
        if drawReadFault() { throw Self.unavailable("the read failed") }
        state.withLock { $0.statistics.readsForwarded += 1 }
        let snapshot = try await base.read(streams, after: knownVersions)
        state.withLock { $0.statistics.eventsRead += snapshot.events.count }
        return snapshot
    }

    /// Appends through the wrapped store unless an append fault is due.
    public func append(_ request: AppendRequest) async throws -> AppendResult {
        let fault = drawAppendFault()
        switch fault {
        case .unavailableBeforeAppend:
            throw Self.unavailable("the connection broke before the append")
        case .conflict:
            let snapshot = try await base.read(request.streams)
            var error = request.conflict(actualVersions: snapshot.versions)
                ?? EventStoreError(.versionConflict, "injected version conflict")
            if error.conflicts.isEmpty {
                error.conflicts = request.streams.map {
                    StreamVersionConflict(streamID: $0, expected: request.expectations[$0]?.exactVersion, actual: snapshot.version(of: $0))
                }
            }
            throw error
        default:
            break
        }
        if let beforeAppend { try await beforeAppend(request) }
        state.withLock { $0.statistics.appendsForwarded += 1 }
        let result: AppendResult
        do {
            result = try await base.append(request)
        } catch let error as EventStoreError where error.code == .versionConflict {
            state.withLock { $0.statistics.storeConflicts += 1 }
            throw error
        }
        if fault == .unavailableAfterAppend { throw Self.unavailable("the connection broke after the append committed") }
        return result
    }

    /// Forwards to the wrapped store.
    public func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? {
        state.withLock { $0.statistics.keyLookups += 1 }
        return try await base.appendResult(forIdempotencyKey: key)
    }

    /// Forwards to the wrapped store.
    public func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] {
        try await base.readAll(after: position, limit: limit)
    }

    /// Forwards to the wrapped store.
    public func events(matching query: EventQuery) async throws -> [StoredEvent] {
        try await base.events(matching: query)
    }
}

/// A small, fast, seedable random generator (SplitMix64), so injected faults repeat for the same seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// Creates a generator from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<1`.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) / Double(1 << 53)
    }

    /// A number in `0..<bound`.
    public mutating func below(_ bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }
}
