import EventCore
import EventCoreTestKit
import Foundation
import Synchronization
import Testing

@Suite("Stream ids, event ids and keys")
struct IdentityTests {
    @Test("valid stream ids keep their text")
    func validStreamIDs() throws {
        #expect(try StreamID("account-42").rawValue == "account-42")
        #expect(try StreamID("zürich/☃ order:7").rawValue == "zürich/☃ order:7")
        #expect(try StreamID(String(repeating: "x", count: 255)).rawValue.count == 255)
    }

    @Test("invalid stream ids are refused with a typed error", arguments: [
        "", String(repeating: "x", count: 256), "line\nbreak", "nul\u{0}byte", "tab\there", "del\u{7F}", "c1\u{85}control",
    ])
    func invalidStreamIDs(_ candidate: String) {
        #expect(StreamID.problem(with: candidate) != nil)
        do {
            _ = try StreamID(candidate)
            Issue.record("\(candidate.debugDescription) was accepted")
        } catch {
            #expect(error.code == .invalidStreamID)
            #expect(!error.isRetryable)
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("a stream id decoded from JSON is validated")
    func decodedStreamIDIsValidated() throws {
        #expect(try JSONDecoder().decode([StreamID].self, from: Data(#"["ok"]"#.utf8)) == [try StreamID("ok")])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([StreamID].self, from: Data(#"["bad\n"]"#.utf8)) }
    }

    @Test("event ids are version 7 and strictly increasing")
    func eventIDsAreTimeOrdered() throws {
        let before = Date()
        let ids = (0..<20_000).map { _ in EventID() }
        #expect(ids.allSatisfy { $0.version == 7 })
        #expect(zip(ids, ids.dropFirst()).allSatisfy { $0 < $1 })
        #expect(Set(ids).count == ids.count)
        #expect(ids[0].createdAt >= before.addingTimeInterval(-0.002))
        let decoded = try JSONDecoder().decode(EventID.self, from: JSONEncoder().encode(ids[7]))
        #expect(decoded == ids[7])
        #expect(ids[7].uuid.uuidString.lowercased() == ids[7].description)
    }

    @Test("idempotency keys are validated")
    func idempotencyKeys() throws {
        #expect(try IdempotencyKey(consumer: "orders", messageID: "m-1").rawValue == "orders/m-1")
        #expect(throws: EventStoreError.self) { try IdempotencyKey("") }
        #expect(throws: EventStoreError.self) { try IdempotencyKey(String(repeating: "k", count: 513)) }
    }
}

/// Whether two durations agree to the microsecond (delays are computed in floating point).
func approximately(_ lhs: Duration, _ rhs: Duration) -> Bool {
    let difference = lhs - rhs
    return difference < .microseconds(1) && difference > .microseconds(-1)
}

func approximately(_ lhs: [Duration], _ rhs: [Duration]) -> Bool {
    lhs.count == rhs.count && zip(lhs, rhs).allSatisfy { approximately($0, $1) }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test("exponential backoff doubles up to the maximum")
    func exponential() {
        let policy = RetryPolicy(maxRetries: 10, backoff: .exponential(initial: .milliseconds(2), multiplier: 2, maximum: .milliseconds(50)), jitter: 0)
        #expect(approximately((1...6).map { policy.baseDelay(beforeRetry: $0) }, [.milliseconds(2), .milliseconds(4), .milliseconds(8), .milliseconds(16), .milliseconds(32), .milliseconds(50)]))
        #expect(approximately(policy.delay(beforeRetry: 3, unitRandom: 0.9), .milliseconds(8)))
        #expect(approximately(policy.baseDelay(beforeRetry: 500), .milliseconds(50)))
    }

    @Test("jitter takes a random fraction off the delay")
    func jitter() {
        let policy = RetryPolicy(maxRetries: 3, backoff: .fixed(.milliseconds(100)), jitter: 0.5)
        #expect(approximately(policy.delay(beforeRetry: 1, unitRandom: 0), .milliseconds(100)))
        #expect(approximately(policy.delay(beforeRetry: 1, unitRandom: 0.5), .milliseconds(75)))
        #expect(approximately(policy.delay(beforeRetry: 1, unitRandom: 1), .milliseconds(50)))
    }

    @Test("linear backoff and the retry bound")
    func linear() {
        let policy = RetryPolicy(maxRetries: 2, backoff: .linear(initial: .seconds(1), increment: .seconds(2), maximum: .seconds(4)), jitter: 0)
        #expect(approximately((1...4).map { policy.baseDelay(beforeRetry: $0) }, [.seconds(1), .seconds(3), .seconds(4), .seconds(4)]))
        #expect(policy.allowsRetry(afterAttempt: 2))
        #expect(!policy.allowsRetry(afterAttempt: 3))
        #expect(policy.maxAttempts == 3)
        #expect(!RetryPolicy.never.allowsRetry(afterAttempt: 1))
    }
}

@Suite("Command executor")
struct ExecutorTests {
    let a = SampleBank.account(1), b = SampleBank.account(2)

    func funded(_ amount: Int) async throws -> InMemoryEventStore {
        let store = InMemoryEventStore()
        let codec = EventCodec()
        let encoded = try codec.encode(SampleBank.Event.deposited(amount: amount))
        _ = try await store.append(AppendRequest(events: [NewEvent(streamID: a, eventType: encoded.eventType, payload: encoded.payload)]))
        return store
    }

    @Test("conflicts are retried with the policy's backoff on the injected clock")
    func backoffOnInjectedClock() async throws {
        let store = FaultInjectingEventStore(wrapping: try await funded(100))
        store.injectIntoNextAppends(.conflict, .conflict, .conflict)
        let clock = ImmediateClock()
        let policy = RetryPolicy(maxRetries: 5, backoff: .exponential(initial: .milliseconds(1), multiplier: 2, maximum: .seconds(1)), jitter: 0.5)
        let executor = CommandExecutor(store: store, configuration: .init(retryPolicy: policy), clock: clock, unitRandom: { 0 })
        let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10))
        #expect(result.outcome == .committed)
        #expect(result.attempts == 4)
        #expect(result.conflictsRetried == 3)
        #expect(approximately(clock.sleeps, [.milliseconds(1), .milliseconds(2), .milliseconds(4)]))
        #expect(store.statistics.injected[.conflict] == 3)
    }

    @Test("jitter comes from the injected random source")
    func jitterFromRandomSource() async throws {
        let store = FaultInjectingEventStore(wrapping: try await funded(100))
        store.injectIntoNextAppends(.conflict)
        let clock = ImmediateClock()
        let policy = RetryPolicy(maxRetries: 1, backoff: .fixed(.milliseconds(40)), jitter: 1)
        let executor = CommandExecutor(store: store, configuration: .init(retryPolicy: policy), clock: clock, unitRandom: { 0.25 })
        _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10))
        #expect(approximately(clock.sleeps, [.milliseconds(30)]))
    }

    @Test("a store that goes away before the append leaves nothing written; the next execution succeeds")
    func unavailableBeforeAppend() async throws {
        let base = try await funded(100)
        let store = FaultInjectingEventStore(wrapping: base)
        store.injectIntoNextAppends(.unavailableBeforeAppend)
        let executor = CommandExecutor(store: store, clock: ImmediateClock())
        await #expect(throws: EventStoreError.self) { try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10)) }
        #expect(try await base.read([a, b]).versions == [a: 1, b: 0])
        let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10))
        #expect(result.outcome == .committed)
    }

    @Test("a commit whose answer was lost is recognised as a duplicate when retried with its key")
    func lostAnswerIsDuplicate() async throws {
        let base = try await funded(100)
        let store = FaultInjectingEventStore(wrapping: base)
        store.injectIntoNextAppends(.unavailableAfterAppend)
        let executor = CommandExecutor(store: store, clock: ImmediateClock())
        let options = ExecutionOptions(idempotencyKey: try IdempotencyKey(consumer: "transfers", messageID: "m-1"))
        do {
            _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
            Issue.record("the lost answer was not reported")
        } catch let error as EventStoreError {
            #expect(error.code == .storeUnavailable)
            #expect(error.isRetryable)
        }
        let retried = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
        #expect(retried.outcome == .duplicate)
        #expect(retried.events.count == 2)
        #expect(try await base.read(stream: a).version(of: a) == 2)
    }

    @Test("a command that keeps discovering streams is stopped")
    func endlessDiscovery() async throws {
        struct Wanderer: Command {
            var readStreams: [StreamID] { [try! StreamID("start")] }
            var initialState: Int { 0 }
            func apply(_ state: inout Int, _ event: SampleBank.Event) {}
            func handle(_ state: Int, context: CommandContext) throws -> [StreamWrite<SampleBank.Event>] {
                context.resolver.add(try StreamID("next-\(context.streams.count)"))
                return []
            }
        }
        let executor = CommandExecutor(store: InMemoryEventStore(), configuration: .init(maxDiscoveryRounds: 3), clock: ImmediateClock())
        await #expect(throws: EventStoreError.self) { try await executor.execute(Wanderer()) }
    }

    @Test("a write is refused for a stream the command did not declare or discover")
    func contextRefusesUndeclaredStreams() throws {
        let context = CommandContext(streams: [a], versions: [a: 0])
        #expect(throws: EventStoreError.self) { try context.write(SampleBank.Event.deposited(amount: 1), to: b) }
        context.resolver.add(b)
        #expect(try context.write(SampleBank.Event.deposited(amount: 1), to: b).streamID == b)
    }

    @Test("the fault injector repeats its faults for the same seed")
    func seededFaultsRepeat() async throws {
        func faults(seed: UInt64) async -> [String] {
            let store = FaultInjectingEventStore(wrapping: InMemoryEventStore(), seed: seed, rates: .init(unavailableBeforeAppend: 0.2, conflict: 0.2))
            var seen: [String] = []
            for index in 0..<40 {
                do {
                    _ = try await store.append(AppendRequest(events: [NewEvent(streamID: try! StreamID("s\(index)"), eventType: "T", payload: Data())]))
                    seen.append("ok")
                } catch let error as EventStoreError {
                    seen.append(error.code.description)
                } catch {
                    seen.append("other")
                }
            }
            return seen
        }
        let first = await faults(seed: 7), again = await faults(seed: 7), other = await faults(seed: 8)
        #expect(first == again)
        #expect(first != other)
        #expect(first.contains("storeUnavailable") && first.contains("versionConflict") && first.contains("ok"))
    }
}

@Suite("Idempotency keys and the stream cache in the executor")
struct ExecutorReadingTests {
    let a = SampleBank.account(1), b = SampleBank.account(2)

    @Test("with a key, a first execution looks nothing up; a redelivery whose decision fails reports the original result")
    func keyLookedUpOnlyWhenTheDecisionFails() async throws {
        let store = FaultInjectingEventStore(wrapping: InMemoryEventStore())
        let executor = CommandExecutor(store: store, clock: ImmediateClock())
        let options = ExecutionOptions(idempotencyKey: try IdempotencyKey(consumer: "accounts", messageID: "open-1"))
        let open = SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 10)
        let first = try await executor.execute(open, options: options)
        #expect(first.outcome == .committed)
        #expect(store.statistics.keyLookups == 0)
        // Deciding again on the state the first execution left fails ("already open"): the key tells it was done.
        let again = try await executor.execute(open, options: options)
        #expect(again.outcome == .duplicate)
        #expect(again.events == first.events)
        #expect(store.statistics.keyLookups == 1)
        // Without a recorded key the same failure is the command's own.
        await #expect(throws: SampleBank.Refusal.self) {
            try await executor.execute(open, options: ExecutionOptions(idempotencyKey: try IdempotencyKey(consumer: "accounts", messageID: "open-2")))
        }
        #expect(try await store.read(stream: a).version(of: a) == 2)
    }

    @Test("with a stream cache checked on read, a command reads only the events the executor does not hold")
    func cacheReadsOnlyWhatIsNew() async throws {
        let store = FaultInjectingEventStore(wrapping: InMemoryEventStore())
        let cache = StreamCache(verification: .onRead)
        let executor = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        _ = try await executor.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
        for _ in 0..<5 { _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10)) }
        // Its own appends extend the cache: after the first reads, nothing comes back from the store.
        #expect(store.statistics.eventsRead == 0)
        let codec = EventCodec()
        let deposit = try codec.encode(SampleBank.Event.deposited(amount: 1))
        _ = try await store.base.append(AppendRequest(events: [NewEvent(streamID: a, eventType: deposit.eventType, payload: deposit.payload)]))
        let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 51))
        #expect(result.outcome == .committed)
        #expect(store.statistics.eventsRead == 1)
        #expect(cache.statistics.streams == 2)
        #expect(cache.statistics.hits == 11)
        #expect(cache.statistics.misses == 2)
        let ledger = try SampleBank.ledger(of: try await store.read([a, b]).events)
        #expect(ledger.balances == [a: 0, b: 101])
    }

    @Test("a cache checked on append skips the reads of streams only this executor writes, and catches other writers")
    func trustedCache() async throws {
        let store = FaultInjectingEventStore(wrapping: InMemoryEventStore())
        let cache = StreamCache()
        #expect(cache.verification == .onAppend)
        let executor = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        _ = try await executor.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
        for _ in 0..<4 { _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10)) }
        // Read: the opening (a unknown) and the first transfer (b unknown); then none.
        #expect(store.statistics.readsForwarded == 2)
        #expect(cache.statistics.readsSkipped == 3)
        let codec = EventCodec()
        func deposit(_ amount: Int) async throws {
            let encoded = try codec.encode(SampleBank.Event.deposited(amount: amount))
            _ = try await store.base.append(AppendRequest(events: [NewEvent(streamID: a, eventType: encoded.eventType, payload: encoded.payload)]))
        }
        // Another writer deposits. On the cached state the transfer decides nothing; that is checked by a read.
        try await deposit(40)
        let short = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 90))
        #expect(short.outcome == .committed)
        #expect(short.attempts == 1)
        // A command that finds a unchanged makes it trusted again. Then another deposit: the decision on the cached
        // state (10 left, enough for 5) is not committed, its append conflicts, and the command is decided again at
        // once on a fresh read (15 left).
        _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 0))
        try await deposit(5)
        let reads = store.statistics.readsForwarded
        let caught = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 5))
        #expect(caught.outcome == .committed)
        #expect(caught.attempts == 2)
        #expect(cache.statistics.trustBroken == 1)
        #expect(store.statistics.readsForwarded == reads + 1)
        let ledger = try SampleBank.ledger(of: try await store.base.read([a, b]).events)
        #expect(ledger.balances == [a: 10, b: 135])
    }

    @Test("where another writer keeps getting in between, the cache stops trusting and reads")
    func trustWithdrawnUnderSharedWriting() async throws {
        let store = FaultInjectingEventStore(wrapping: InMemoryEventStore())
        let cache = StreamCache()
        let executor = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        let codec = EventCodec()
        let encoded = try codec.encode(SampleBank.Event.deposited(amount: 10))
        _ = try await executor.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
        for _ in 0..<3 { _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 1)) }
        #expect(cache.statistics.readsSkipped == 2)
        // The other writer gets in before every other command: each stream is found unchanged half of the time, so
        // trusting it would cost a conflict every other command.
        for _ in 0..<20 {
            _ = try await store.base.append(AppendRequest(events: [NewEvent(streamID: a, eventType: encoded.eventType, payload: encoded.payload)]))
            for _ in 0..<2 {
                let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 1))
                #expect(result.outcome == .committed)
            }
        }
        let statistics = cache.statistics
        #expect(statistics.recentStaleness > StreamCache.trustLimit)
        // Trust goes after a few broken decisions instead of costing a conflict on each of the 20 turns.
        #expect(statistics.trustBroken >= 1 && statistics.trustBroken <= 6)
        let ledger = try SampleBank.ledger(of: try await store.base.read([a, b]).events)
        #expect(ledger.balances == [a: 97 + 200 - 40, b: 43])
    }

    @Test("with a stream cache, each stored event is decoded once, not once per command that folds it")
    func decodedOnce() async throws {
        let cache = StreamCache()
        let store = InMemoryEventStore()
        let cached = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        let before = Tally.decodes.load(ordering: .relaxed)
        for expected in 0..<12 {
            let result = try await cached.execute(Tally.Count(expected: expected))
            #expect(result.outcome == .committed)
        }
        // 12 commands fold 0 + 1 + ... + 11 = 66 events; each of the 11 stored before the last is decoded once.
        #expect(Tally.decodes.load(ordering: .relaxed) - before == 11)
        // Without a cache every fold decodes everything again; the state is the same.
        let plain = CommandExecutor(store: store, clock: ImmediateClock())
        let again = Tally.decodes.load(ordering: .relaxed)
        _ = try await plain.execute(Tally.Count(expected: 12))
        #expect(Tally.decodes.load(ordering: .relaxed) - again == 12)
        // The cached executor decodes only its own last event and the other executor's.
        _ = try await cached.execute(Tally.Count(expected: 13))
        #expect(Tally.decodes.load(ordering: .relaxed) - again == 12 + 2)
    }

    @Test("the stream cache stays within its bound by dropping the streams used least recently")
    func cacheBound() async throws {
        let store = InMemoryEventStore()
        let cache = StreamCache(maximumBytes: 4096)
        let executor = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        for index in 1...40 {
            _ = try await executor.execute(SampleBank.OpenAccount(account: SampleBank.account(index), owner: "owner \(index)", initialDeposit: index))
        }
        let statistics = cache.statistics
        #expect(statistics.bytes <= 4096)
        #expect(statistics.evictions > 0)
        #expect(statistics.streams < 40)
        // The latest account is still held; the first went long ago, and reading it again is a miss.
        let misses = statistics.misses
        _ = try await executor.execute(SampleBank.Transfer(from: SampleBank.account(40), to: SampleBank.account(1), amount: 40))
        #expect(cache.statistics.misses == misses + 1)
        let ledger = try SampleBank.ledger(of: try await store.read([SampleBank.account(1), SampleBank.account(40)]).events)
        #expect(ledger.balances == [SampleBank.account(1): 41, SampleBank.account(40): 0])
    }

    @Test("a cached stream the store's answer does not continue is dropped and read again whole")
    func cacheThatDoesNotFitIsReadAgain() async throws {
        let first = InMemoryEventStore()
        let store = SwitchingStore(first)
        let cache = StreamCache()
        let executor = CommandExecutor(store: store, cache: cache, clock: ImmediateClock())
        _ = try await executor.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
        _ = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 60))
        // Another store behind the same executor, where a holds fewer events than the cache: a misuse the cache
        // must survive by reading the whole streams, not by deciding on events the store does not have.
        let second = InMemoryEventStore()
        _ = try await CommandExecutor(store: second).execute(SampleBank.OpenAccount(account: a, owner: "bob", initialDeposit: 50))
        store.switchTo(second)
        let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 50))
        #expect(result.outcome == .committed)
        #expect(result.streamVersions == [a: 3, b: 1])
        let ledger = try SampleBank.ledger(of: try await second.read([a, b]).events)
        #expect(ledger.balances == [a: 0, b: 50])
    }
}

/// Events that count their decodings, and a command that appends one after checking how many it folded.
private enum Tally {
    static let decodes = Atomic<Int>(0)
    static let stream = try! StreamID("tally")

    struct Counted: DomainEvent {
        var eventType: String { "Counted" }
        init() {}
        init(from decoder: any Decoder) throws {
            _ = try decoder.singleValueContainer()
            Tally.decodes.add(1, ordering: .relaxed)
        }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(1)
        }
    }

    struct Miscount: Error {}

    struct Count: Command {
        var expected: Int
        var readStreams: [StreamID] { [Tally.stream] }
        var initialState: Int { 0 }
        func apply(_ state: inout Int, _ event: Counted) { state += 1 }
        func handle(_ state: Int, context: CommandContext) throws -> [StreamWrite<Counted>] {
            guard state == expected else { throw Miscount() }
            return [try context.write(Counted(), to: Tally.stream)]
        }
    }
}

/// A store whose backing store can be replaced under a running executor.
private final class SwitchingStore: EventStore {
    private let current: Mutex<any EventStore>

    init(_ store: any EventStore) { current = Mutex(store) }

    func switchTo(_ store: any EventStore) { current.withLock { $0 = store } }

    private var store: any EventStore { current.withLock { $0 } }

    func read(_ streams: [StreamID]) async throws -> StreamsSnapshot { try await store.read(streams) }
    func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot {
        try await store.read(streams, after: knownVersions)
    }
    func append(_ request: AppendRequest) async throws -> AppendResult { try await store.append(request) }
    func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? { try await store.appendResult(forIdempotencyKey: key) }
    func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] { try await store.readAll(after: position, limit: limit) }
    func events(matching query: EventQuery) async throws -> [StoredEvent] { try await store.events(matching: query) }
}

@Suite("Given, when, then")
struct ScenarioTests {
    let a = SampleBank.account(1), b = SampleBank.account(2)

    @Test("a transfer debits one account and credits the other")
    func transfer() async throws {
        try await CommandScenario<SampleBank.Transfer>()
            .given(.deposited(amount: 50), in: a)
            .when(SampleBank.Transfer(from: a, to: b, amount: 20))
            .then(written: [(a, .withdrawn(amount: 20)), (b, .deposited(amount: 20))])
    }

    @Test("a transfer without money decides nothing")
    func noMoney() async throws {
        try await CommandScenario<SampleBank.Transfer>()
            .given(.deposited(amount: 5), in: a)
            .when(SampleBank.Transfer(from: a, to: b, amount: 20))
            .thenNothingWritten()
    }

    @Test("opening an open account is refused")
    func refusal() async throws {
        try await CommandScenario<SampleBank.OpenAccount>()
            .given(.opened(owner: "ann"), in: a)
            .when(SampleBank.OpenAccount(account: a, owner: "bob", initialDeposit: 1))
            .thenFails(with: SampleBank.Refusal("account \(a) is already open"))
    }

    @Test("the harness reports a wrong expectation")
    func harnessDetectsMismatch() async throws {
        let outcome = try await CommandScenario<SampleBank.Transfer>()
            .given(.deposited(amount: 50), in: a)
            .when(SampleBank.Transfer(from: a, to: b, amount: 20))
        #expect(throws: ContractViolation.self) { try outcome.then(written: [(a, .withdrawn(amount: 21)), (b, .deposited(amount: 21))]) }
        #expect(throws: ContractViolation.self) { try outcome.thenNothingWritten() }
    }
}

@Suite("Errors and codec")
struct ErrorTests {
    @Test("descriptions name code, streams and versions but no underlying text")
    func description() throws {
        struct Secret: Error, CustomStringConvertible { var description: String { "password=hunter2" } }
        let stream = try StreamID("account-1")
        let error = EventStoreError(.versionConflict, "stale", conflicts: [StreamVersionConflict(streamID: stream, expected: 2, actual: 3)], underlying: Secret())
        #expect(error.description.contains("versionConflict"))
        #expect(error.description.contains("account-1 expected 2, actual 3"))
        #expect(!error.description.contains("hunter2"))
        #expect(error.isRetryable)
        #expect(!EventStoreError(.payloadTooLarge, "big").isRetryable)
        #expect(EventStoreError(.storeUnavailable, "down").isRetryable)
    }

    @Test("the codec skips foreign types and reports bad payloads of known types")
    func codec() throws {
        let codec = EventCodec()
        let encoded = try codec.encode(SampleBank.Event.withdrawn(amount: 3))
        #expect(encoded.eventType == "MoneyWithdrawn")
        func stored(_ type: String, _ payload: Data) throws -> StoredEvent {
            StoredEvent(id: EventID(), streamID: try StreamID("s"), streamVersion: 1, globalPosition: 9, eventType: type, payload: payload, metadata: EventMetadata(), recordedAt: Date())
        }
        #expect(try codec.decode(stored("MoneyWithdrawn", encoded.payload), as: SampleBank.Event.self) == .withdrawn(amount: 3))
        #expect(try codec.decode(stored("Foreign", Data("x".utf8)), as: SampleBank.Event.self) == nil)
        do {
            _ = try codec.decode(stored("MoneyWithdrawn", Data("x".utf8)), as: SampleBank.Event.self)
            Issue.record("a bad payload decoded")
        } catch let error as EventStoreError {
            #expect(error.code == .undecodableEvent)
            #expect(error.globalPosition == 9)
        }
    }
}
