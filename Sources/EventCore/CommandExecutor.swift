import Foundation

/// Options of one execution: the idempotency key and the metadata stamped on every event written.
public struct ExecutionOptions: Sendable, Hashable {
    /// If set, the execution commits at most once for this key; later executions report `.duplicate`.
    public var idempotencyKey: IdempotencyKey?
    /// Metadata for every event written (a ``StreamWrite``'s own metadata fields win).
    public var metadata: EventMetadata

    /// Creates options.
    public init(idempotencyKey: IdempotencyKey? = nil, metadata: EventMetadata = EventMetadata()) {
        self.idempotencyKey = idempotencyKey
        self.metadata = metadata
    }
}

/// What an execution did, with the stored events so the caller can publish them.
public struct CommandResult: Sendable, Hashable {
    /// The kind of result.
    public enum Outcome: Sendable, Hashable {
        /// Events (or, for a write without events, the idempotency key) were committed by this execution.
        case committed
        /// An earlier execution with the same idempotency key committed; ``CommandResult/events`` are its events.
        case duplicate
        /// The command decided to write nothing; with an idempotency key, the key was recorded.
        case noOp
    }

    /// The kind of result.
    public var outcome: Outcome
    /// The events committed (for `.duplicate`: the events of the original execution), in global order.
    public var events: [StoredEvent]
    /// The version of every stream read, after the commit (for `.noOp` without a key: as read).
    public var streamVersions: [StreamID: Int]
    /// How many times the command was decided: 1, plus one per version conflict retried.
    public var attempts: Int

    /// Creates a result.
    public init(outcome: Outcome, events: [StoredEvent], streamVersions: [StreamID: Int], attempts: Int) {
        self.outcome = outcome
        self.events = events
        self.streamVersions = streamVersions
        self.attempts = attempts
    }

    /// The number of version conflicts that were retried.
    public var conflictsRetried: Int { max(0, attempts - 1) }
}

/// Runs commands against an event store: read, fold, decide, append atomically, retry on conflict.
///
/// The executor holds no state of its own besides an optional ``StreamCache``; share one across tasks. The clock
/// only serves the backoff between conflict retries, so a test can pass a clock that does not really sleep. A
/// command runs on the store's ``EventStore/preferredExecutor`` when it has one.
///
/// With an idempotency key, a redelivered command is recognised by the append, which reports the original
/// result (``AppendResult/Outcome/duplicate``) before it looks at any expectation; the key is looked up apart
/// only when the decision itself fails (a redelivered command may not decide again on the state its first
/// execution left), so the usual execution costs no extra round trip.
public struct CommandExecutor: Sendable {
    /// The executor's settings.
    public struct Configuration: Sendable, Hashable {
        /// How version conflicts are retried.
        public var retryPolicy: RetryPolicy
        /// How many times one decision may discover new streams before the execution fails.
        public var maxDiscoveryRounds: Int

        /// Creates settings.
        public init(retryPolicy: RetryPolicy = .conflictDefault, maxDiscoveryRounds: Int = 8) {
            self.retryPolicy = retryPolicy
            self.maxDiscoveryRounds = maxDiscoveryRounds
        }
    }

    /// The store commands run against.
    public let store: any EventStore
    /// The settings.
    public let configuration: Configuration
    /// The streams read before, if the executor keeps them: commands then read only what is new.
    public let cache: StreamCache?
    private let clock: any Clock<Duration>
    private let unitRandom: @Sendable () -> Double
    private let codec = EventCodec()

    /// Creates an executor.
    /// - Parameters:
    ///   - store: the event store.
    ///   - configuration: retry policy and discovery limit.
    ///   - cache: keeps the streams read and written, so that later commands on them read only newer events;
    ///     one cache per store.
    ///   - clock: sleeps the backoff between retries; inject a test clock to avoid real sleeps.
    ///   - unitRandom: the jitter source, returning values in `0..<1`.
    public init(
        store: any EventStore,
        configuration: Configuration = Configuration(),
        cache: StreamCache? = nil,
        clock: any Clock<Duration> = ContinuousClock(),
        unitRandom: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.store = store
        self.configuration = configuration
        self.cache = cache
        self.clock = clock
        self.unitRandom = unitRandom
    }

    /// Executes `command` until it commits, turns out to be a duplicate, decides nothing, or fails.
    ///
    /// - Throws: ``EventStoreError`` with code ``EventStoreError/Code/versionConflict`` (with every stream's
    ///   expected and actual version and the number of attempts) when conflicts outlast the retry policy; any
    ///   other store error unchanged; any error thrown by the command's `handle` unchanged.
    public func execute<C: Command>(_ command: C, options: ExecutionOptions = ExecutionOptions()) async throws -> CommandResult {
        guard let executor = store.preferredExecutor else { return try await executeHere(command, options: options) }
        return try await withTaskExecutorPreference(executor) { try await executeHere(command, options: options) }
    }

    /// ``execute(_:options:)`` on the current executor.
    private func executeHere<C: Command>(_ command: C, options: ExecutionOptions) async throws -> CommandResult {
        let policy = configuration.retryPolicy
        var attempt = 1
        var trusting = true
        while true {
            do {
                return try await decideAndAppend(command, options: options, attempt: attempt, trusting: trusting)
            } catch is StaleCacheConflict {
                // Decided on cached streams another writer had changed: decide again at once, on a fresh read.
                attempt += 1
                trusting = false
            } catch let error as EventStoreError where error.code == .versionConflict {
                guard policy.allowsRetry(afterAttempt: attempt) else {
                    var exhausted = error
                    exhausted.attempts = attempt
                    exhausted.message = "the version conflict did not clear after \(attempt) attempts: " + error.message
                    throw exhausted
                }
                try await clock.sleep(for: policy.delay(beforeRetry: attempt, unitRandom: unitRandom()))
                attempt += 1
                trusting = false
            } catch let error as EventStoreError where error.isRetryable {
                throw error
            } catch {
                // The decision failed. A redelivered command may fail where its first execution succeeded, on the
                // state that execution left: its recorded result wins over the failure.
                if let key = options.idempotencyKey, let recorded = try await store.appendResult(forIdempotencyKey: key) {
                    return CommandResult(outcome: .duplicate, events: recorded.events, streamVersions: recorded.streamVersions, attempts: attempt)
                }
                throw error
            }
        }
    }

    /// The state `command` would decide on, folded from what the executor's stream cache holds of its declared
    /// streams, without asking the store; nil without a cache, when one of the streams is not held, or when an
    /// event does not decode.
    ///
    /// The cache may be behind the store (another writer may have appended since), never ahead of it and never
    /// different: use this only for conclusions that no later event can undo, such as "this process has ended".
    /// Discovered streams are not included.
    public func cachedState<C: Command>(of command: C) -> C.State? {
        guard let cache else { return nil }
        let streams = Self.declaredStreams(of: command)
        guard let snapshot = cache.heldSnapshot(streams) else { return nil }
        return try? fold(snapshot, of: streams, for: command)
    }

    /// The streams `command` declares, in order, each once.
    private static func declaredStreams<C: Command>(of command: C) -> [StreamID] {
        var streams: [StreamID] = []
        for stream in command.readStreams where !streams.contains(stream) { streams.append(stream) }
        return streams
    }

    /// Reads `streams` whole: from the store, or, for the streams the cache holds, their cached events followed by
    /// what the store has after them.
    private func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        guard let cache else { return try await store.read(streams) }
        func readWhole() async throws -> StreamsSnapshot {
            let snapshot = try await store.read(streams)
            remember(snapshot, of: streams, in: cache)
            return snapshot
        }
        let held = cache.lookup(streams)
        guard !held.isEmpty else { return try await readWhole() }
        let fresh = try await store.read(streams, after: held.mapValues(\.version))
        var newByStream: [StreamID: [StoredEvent]] = [:]
        for event in fresh.events { newByStream[event.streamID, default: []].append(event) }
        var merged: [StoredEvent] = []
        for (stream, (events, version)) in held {
            let new = newByStream[stream] ?? []
            let current = fresh.version(of: stream)
            // Anything but the held events continued without a gap means the cache cannot be trusted for these
            // streams: forget them and read everything again.
            guard current == version + new.count, new.first.map({ $0.streamVersion == version + 1 }) ?? true else {
                for stream in held.keys { cache.remove(stream) }
                return try await readWhole()
            }
            merged.append(contentsOf: events)
        }
        var snapshot = fresh
        if !merged.isEmpty {
            merged.append(contentsOf: fresh.events)
            merged.sort { $0.globalPosition < $1.globalPosition }
            snapshot.events = merged
        }
        remember(snapshot, of: streams.filter { held[$0] == nil || !(newByStream[$0]?.isEmpty ?? true) }, in: cache)
        // A held stream nobody else appended to since this executor last used it is trusted from now on.
        for (stream, (_, version)) in held where newByStream[stream] == nil {
            cache.setTrusted(stream, at: version, true)
        }
        cache.observe(stale: held.keys.contains { newByStream[$0] != nil })
        return snapshot
    }

    /// Folds `snapshot` into `command`'s state. Events the cache holds already decoded as the command's event type
    /// are not decoded again, and what is decoded here is kept for the next command.
    private func fold<C: Command>(_ snapshot: StreamsSnapshot, of streams: [StreamID], for command: C) throws -> C.State {
        var state = command.initialState
        guard let cache else {
            for stored in snapshot.events {
                if let event = try codec.decode(stored, as: C.Event.self) { command.apply(&state, event, recorded: stored) }
            }
            return state
        }
        let known = cache.decoded(streams, as: C.Event.self)
        var fresh: [StreamID: (first: Int, values: [C.Event?])] = [:]
        for stored in snapshot.events {
            let event: C.Event?
            if let values = known[stored.streamID], stored.streamVersion <= values.count {
                event = values[stored.streamVersion - 1]
            } else {
                event = try codec.decode(stored, as: C.Event.self)
                fresh[stored.streamID, default: (stored.streamVersion, [])].values.append(event)
            }
            if let event { command.apply(&state, event, recorded: stored) }
        }
        for (stream, decoded) in fresh {
            cache.keepDecoded(stream, from: decoded.first, decoded.values, as: C.Event.self)
        }
        return state
    }

    /// Keeps the whole `streams` of `snapshot` in `cache`.
    private func remember(_ snapshot: StreamsSnapshot, of streams: [StreamID], in cache: StreamCache) {
        guard !streams.isEmpty else { return }
        var byStream: [StreamID: [StoredEvent]] = [:]
        for event in snapshot.events { byStream[event.streamID, default: []].append(event) }
        for stream in streams {
            cache.record(stream, events: byStream[stream] ?? [], version: snapshot.version(of: stream))
        }
    }

    /// One attempt: read and fold (again for every round of discovery), decide, append. With `trusting`, streams
    /// the cache trusts are not read; a decision on them that fails or decides nothing is made again on a fresh
    /// read, and one whose append conflicts throws ``StaleCacheConflict``.
    private func decideAndAppend<C: Command>(_ command: C, options: ExecutionOptions, attempt: Int, trusting: Bool) async throws -> CommandResult {
        var streams = Self.declaredStreams(of: command)
        var round = 0
        var trusting = trusting
        while true {
            let snapshot: StreamsSnapshot
            var unverified = false
            if trusting, let cached = cache?.trustedSnapshot(streams) {
                snapshot = cached
                unverified = true
            } else {
                snapshot = try await read(streams)
            }
            let state = try fold(snapshot, of: streams, for: command)
            var versions: [StreamID: Int] = [:]
            for stream in streams { versions[stream] = snapshot.version(of: stream) }
            let resolver = StreamResolver()
            let context = CommandContext(streams: streams, versions: versions, resolver: resolver, attempt: attempt)
            let writes: [StreamWrite<C.Event>]
            do {
                writes = try command.handle(state, context: context)
            } catch where unverified {
                trusting = false
                continue
            }
            let discovered = resolver.requestedStreams.filter { !streams.contains($0) }
            if !discovered.isEmpty {
                round += 1
                guard round <= configuration.maxDiscoveryRounds else {
                    throw EventStoreError(
                        .tooManyDiscoveryRounds,
                        "the command discovered new streams in more than \(configuration.maxDiscoveryRounds) rounds",
                        streamID: discovered.first
                    )
                }
                streams.append(contentsOf: discovered)
                continue
            }
            if unverified && writes.isEmpty && options.idempotencyKey == nil {
                // Nothing to append would check the cached streams: check them by reading before deciding nothing.
                trusting = false
                continue
            }
            do {
                let result = try await append(writes, versions: versions, options: options, attempt: attempt)
                if unverified { cache?.observe(stale: false) }
                return result
            } catch let error as EventStoreError where unverified && error.code == .versionConflict {
                cache?.distrust(streams)
                throw StaleCacheConflict()
            }
        }
    }

    private func append<Event: DomainEvent>(
        _ writes: [StreamWrite<Event>], versions: [StreamID: Int], options: ExecutionOptions, attempt: Int
    ) async throws -> CommandResult {
        var events: [NewEvent] = []
        events.reserveCapacity(writes.count)
        for write in writes {
            guard versions[write.streamID] != nil else {
                throw EventStoreError(.undeclaredStream, "the command wrote to a stream it neither declared nor discovered", streamID: write.streamID)
            }
            let (eventType, payload) = try codec.encode(write.event)
            events.append(NewEvent(
                streamID: write.streamID, eventType: eventType, payload: payload,
                metadata: options.metadata.merged(with: write.metadata).normalized
            ))
        }
        if events.isEmpty && options.idempotencyKey == nil {
            return CommandResult(outcome: .noOp, events: [], streamVersions: versions, attempts: attempt)
        }
        let request = AppendRequest(
            events: events,
            expectations: versions.mapValues { .exact($0) },
            idempotencyKey: options.idempotencyKey
        )
        let result = try await store.append(request)
        if let cache, result.outcome == .committed, !events.isEmpty {
            var written: [StreamID: [StoredEvent]] = [:]
            for event in result.events { written[event.streamID, default: []].append(event) }
            for (stream, appended) in written {
                guard let before = versions[stream], let after = result.streamVersions[stream] else { continue }
                cache.extend(stream, from: before, with: appended, to: after)
            }
        }
        switch result.outcome {
        case .duplicate:
            return CommandResult(outcome: .duplicate, events: result.events, streamVersions: result.streamVersions, attempts: attempt)
        case .committed:
            return CommandResult(
                outcome: events.isEmpty ? .noOp : .committed,
                events: result.events,
                streamVersions: result.streamVersions,
                attempts: attempt
            )
        }
    }
}

/// A decision made on trusted cached streams met a version conflict: another writer had got in first.
private struct StaleCacheConflict: Error {}
