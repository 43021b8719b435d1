import EventCore
import EventCoreTestKit
@testable import EventStorePostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

@Suite("PostgreSQL store")
struct PostgresStoreTests {
    let a = SampleBank.account(1), b = SampleBank.account(2)

    func event(_ amount: Int, to stream: StreamID, bytes: Int? = nil) throws -> NewEvent {
        let encoded = try EventCodec().encode(SampleBank.Event.deposited(amount: amount))
        return NewEvent(streamID: stream, eventType: encoded.eventType, payload: bytes.map { Data(repeating: 0x20, count: $0) } ?? encoded.payload)
    }

    /// A connection of its own, outside the store's pool.
    func withDedicatedConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let parts = TestDatabase.parts
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: parts.host, port: parts.port, username: parts.user, password: parts.password, database: parts.database, tls: .disable),
            id: 1, logger: Logger(label: "tests.postgres.dedicated")
        )
        do {
            let value = try await body(connection)
            try await connection.close()
            return value
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// A store on a pool of its own whose backends carry the returned `application_name`, for the tests that
    /// terminate backends: a terminated backend's connection must never be handed to another test by the shared
    /// pool, where the test's own queries do not go through the store's guards.
    func withIsolatedStore<T>(maximumConnections: Int = 4, _ body: (PostgresEventStore, String) async throws -> T) async throws -> T {
        var configuration = TestDatabase.clientConfiguration()
        configuration.options.maximumConnections = maximumConnections
        let name = "eventcore_isolated_\(UInt32.random(in: 0...UInt32.max))"
        configuration.options.additionalStartupParameters = [("application_name", name)]
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "tests.postgres.isolated"))
        let running = await client.startRunning()
        defer { running.cancel() }
        let store = try await PostgresEventStore.start(client: client, configuration: .init(schema: TestDatabase.uniqueSchema()))
        do {
            let value = try await body(store, name)
            await TestDatabase.drop(store)
            return value
        } catch {
            await TestDatabase.drop(store)
            throw error
        }
    }

    @Test("schema names outside the accepted form are refused", arguments: ["", "Upper", "1abc", "a-b", "a;drop", String(repeating: "a", count: 64)])
    func schemaNames(_ name: String) async {
        let client = await TestDatabase.client
        #expect(throws: EventStoreError.self) {
            try PostgresEventStore(client: client, configuration: .init(schema: name))
        }
    }

    @Test("migrations are recorded and running them again changes nothing")
    func migrations() async throws {
        try await PostgresEventStore.withTestStore { store in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            try await store.migrate()
            async let again1: Void = store.migrate()
            async let again2: Void = store.migrate()
            _ = try await (again1, again2)
            let rows = try await TestDatabase.client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \"\(store.configuration.schema)\".schema_migrations"))
            var count: Int64 = 0
            for try await value in rows.decode(Int64.self) { count = value }
            #expect(count == Int64(store.schema.migrations.count))
            #expect(try await store.read(stream: a).version(of: a) == 1)
        }
    }

    @Test("the payload limit is configurable and its error is clear")
    func payloadLimit() async throws {
        try await PostgresEventStore.withTestStore(maximumPayloadBytes: 2048) { store in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a, bytes: 2048)]))
            do {
                _ = try await store.append(AppendRequest(events: [try event(1, to: b), try event(1, to: a, bytes: 4096)]))
                Issue.record("an oversized payload was stored")
            } catch let error as EventStoreError {
                #expect(error.code == .payloadTooLarge)
                #expect(error.message.contains("4096 bytes"))
                #expect(error.message.contains("limit is 2048"))
            }
            #expect(try await store.read([a, b]).versions == [a: 1, b: 0])
        }
    }

    @Test("a commit that comes late holds tailing readers back instead of being skipped")
    func lateCommitIsNeverSkipped() async throws {
        try await PostgresEventStore.withTestStore { store in
            let early = try await store.append(AppendRequest(events: [try event(1, to: b)]))
            try await withDedicatedConnection { connection in
                try await connection.query("BEGIN", logger: Logger(label: "tests"))
                // An append that takes its position now and commits only later.
                let late = AppendRequest(events: [try event(2, to: a)])
                try await connection.query(store.appendStatement(late, recordedAt: RecordedTime.microseconds(Date())), logger: Logger(label: "tests"))
                let after = try await store.append(AppendRequest(events: [try event(3, to: b)]))
                let whileOpen = try await store.readAll(after: 0, limit: 100)
                #expect(whileOpen.map(\.globalPosition) == early.globalPositions, "nothing at or after the open append is returned")
                #expect(!whileOpen.contains { $0.globalPosition == after.globalPositions[0] })
                try await connection.query("COMMIT", logger: Logger(label: "tests"))
                let all = try await store.readAll(after: early.globalPositions[0], limit: 100)
                #expect(all.map(\.streamID) == [a, b])
                #expect(all.last?.globalPosition == after.globalPositions[0])
            }
        }
    }

    @Test("a connection terminated mid-append fails cleanly, writes nothing, and the next append succeeds")
    func terminatedMidAppend() async throws {
        try await withIsolatedStore { store, _ in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            let schema = store.configuration.schema
            try await withDedicatedConnection { blocker in
                // Hold the stream row so the append stops inside its transaction, waiting for the stream lock.
                try await lockRow(of: a, in: schema, on: blocker)
                let append = Task {
                    try await store.append(AppendRequest(events: [try event(2, to: b), try event(3, to: a)], expectations: [a: .exact(1)]))
                }
                let pid = try await backendWaitingForALock(in: schema, calling: "append_events")
                try await TestDatabase.client.query("SELECT pg_terminate_backend(\(pid))")
                do {
                    let result = try await append.value
                    Issue.record("the append succeeded on a terminated connection: \(result)")
                } catch let error as EventStoreError {
                    #expect(error.code == .storeUnavailable)
                    #expect(error.isRetryable)
                    #expect(!error.description.contains("fleet:fleet"))
                }
                try await blocker.query("ROLLBACK", logger: Logger(label: "tests"))
            }
            #expect(try await store.read([a, b]).versions == [a: 1, b: 0], "nothing half-written")
            let next = try await store.append(AppendRequest(events: [try event(4, to: b), try event(5, to: a)], expectations: [a: .exact(1)]))
            #expect(next.outcome == .committed)
            #expect(next.streamVersions == [a: 2, b: 1])
            let all = try await store.readAll(after: 0, limit: 10)
            #expect(all.count == 3, "tailing readers are not held back by the terminated append")
        }
    }

    @Test("an append without an answer within the time limit fails as retryable, the appends behind it go on, and its key tells whether it committed later")
    func roundTripTimeLimit() async throws {
        // A pool of its own: the time limit includes the wait for a connection, which the shared pool of the
        // parallel tests could stretch beyond it.
        var configuration = TestDatabase.clientConfiguration()
        configuration.options.maximumConnections = 4
        PostgresURL.tuneForEventStore(&configuration)
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "tests.postgres.limit"))
        let running = await client.startRunning()
        defer { running.cancel() }
        let store = try await PostgresEventStore.start(
            client: client, configuration: .init(schema: TestDatabase.uniqueSchema(), roundTripTimeLimit: .seconds(1))
        )
        defer { Task { await TestDatabase.drop(store) } }
        /// A caller's retries of what a busy machine may leave unanswered for a second.
        func appendRetrying(_ request: AppendRequest) async throws -> AppendResult {
            for _ in 0..<4 {
                do { return try await store.append(request) } catch let error as EventStoreError where error.code == .storeUnavailable {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            return try await store.append(request)
        }
        let c = SampleBank.account(3)
        _ = try await appendRetrying(AppendRequest(events: [try event(1, to: a)]))
        let key = try IdempotencyKey("late-append")
        let late = AppendRequest(events: [try event(2, to: a)], expectations: [a: .exact(1)], idempotencyKey: key)
        try await withDedicatedConnection { blocker in
            // Hold the stream row: the append waits for it inside its transaction, without an answer.
            try await lockRow(of: a, in: store.configuration.schema, on: blocker)
            let started = ContinuousClock.now
            let blocked = Task { try await store.append(late) }
            try await Task.sleep(for: .milliseconds(50))
            // Made while the blocked append holds the store's one append slot: it goes once that one is given up.
            let behind = Task { try await appendRetrying(AppendRequest(events: [try event(3, to: c)])) }
            do {
                let result = try await blocked.value
                Issue.record("an append waiting for a lock was answered: \(result)")
            } catch let error as EventStoreError {
                #expect(error.code == .storeUnavailable)
                #expect(error.isRetryable)
                #expect(error.description.contains("may still commit"), "\(error)")
            }
            #expect(ContinuousClock.now - started < .seconds(15), "the time limit ended the wait")
            #expect(try await behind.value.outcome == .committed)
            try await blocker.query("ROLLBACK", logger: Logger(label: "tests"))
        }
        // Given up by the store, the append still committed on the server once the lock was free: a retry with
        // its key is told so instead of writing it twice.
        var retried = try await appendRetrying(late)
        for _ in 0..<50 where retried.outcome != .duplicate {
            try await Task.sleep(for: .milliseconds(100))
            retried = try await appendRetrying(late)
        }
        #expect(retried.outcome == .duplicate)
        #expect(try await store.read([a]).versions[a] == 2, "written once")
    }

    @Test("backends terminated at random while appends and reads run: every call ends, with an answer or a retryable error")
    func terminatedBackendsNeverHang() async throws {
        // A pool of its own, named so that only its backends are terminated.
        try await withIsolatedStore(maximumConnections: 6) { store, name in
            let callers = 8, callsEach = 150
            final class Tally: Sendable {
                let counts = Mutex((answered: 0, unavailable: 0, other: [String]()))
            }
            let tally = Tally()
            // Each caller runs in a task of its own, so a call that never ends shows up as a missing count at the
            // deadline instead of hanging the test.
            let finished = AsyncStream<Void>.makeStream()
            for caller in 0..<callers {
                Task {
                    let stream = SampleBank.account(caller + 100)
                    let encoded = try EventCodec().encode(SampleBank.Event.deposited(amount: 1))
                    for index in 0..<callsEach {
                        let deposit = NewEvent(streamID: stream, eventType: encoded.eventType, payload: encoded.payload)
                        do {
                            if index % 2 == 0 {
                                _ = try await store.append(AppendRequest(events: [deposit]))
                            } else {
                                _ = try await store.read([stream])
                            }
                            tally.counts.withLock { $0.answered += 1 }
                        } catch let error as EventStoreError where error.code == .storeUnavailable {
                            tally.counts.withLock { $0.unavailable += 1 }
                        } catch {
                            tally.counts.withLock { $0.other.append("\(error)") }
                        }
                    }
                    finished.continuation.yield()
                }
            }
            let killer = Task {
                try await withDedicatedConnection { connection in
                    while !Task.isCancelled {
                        try await Task.sleep(for: .milliseconds(40))
                        _ = try await connection.query(PostgresQuery(unsafeSQL: """
                            SELECT pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity WHERE application_name = '\(name)'
                            ORDER BY random() LIMIT 1) chosen
                            """), logger: Logger(label: "tests")).collect()
                    }
                }
            }
            let deadline = Task {
                try? await Task.sleep(for: .seconds(120))
                finished.continuation.finish()
            }
            var done = 0
            for await _ in finished.stream {
                done += 1
                if done == callers { break }
            }
            killer.cancel()
            deadline.cancel()
            let counts = tally.counts.withLock { $0 }
            #expect(done == callers, "callers still waiting for the store after 120 s: \(callers - done)")
            #expect(counts.answered + counts.unavailable + counts.other.count == callers * callsEach)
            #expect(counts.other.isEmpty, "errors other than storeUnavailable: \(counts.other.prefix(3))")
            #expect(counts.answered > callers * callsEach / 2, "most calls answered: \(counts)")
        }
    }

    @Test("a corrupted row is reported with its position, not dropped")
    func corruptedRow() async throws {
        try await PostgresEventStore.withTestStore { store in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            let schema = store.configuration.schema
            try await TestDatabase.client.query(PostgresQuery(unsafeSQL: """
                INSERT INTO "\(schema)".events (global_position, event_id, stream_id, stream_version, event_type, payload, recorded_at_us)
                VALUES (nextval('"\(schema)".global_positions'), gen_random_uuid(), E'bad\\nstream', 1, 'T', '\\x00', 0)
                """))
            do {
                _ = try await store.readAll(after: 0, limit: 10)
                Issue.record("the corrupted row was not reported")
            } catch let error as EventStoreError {
                #expect(error.code == .corruptedRecord)
                #expect(error.globalPosition == 2)
            }
        }
    }

    /// Opens a transaction on `blocker` that holds the row of `stream` in the store's `streams` table, so that an
    /// append to it waits inside its batch until `blocker` rolls back.
    func lockRow(of stream: StreamID, in schema: String, on blocker: PostgresConnection) async throws {
        try await blocker.query("BEGIN", logger: Logger(label: "tests"))
        try await blocker.query(PostgresQuery(unsafeSQL: "SELECT version FROM \"\(schema)\".streams WHERE stream_id = '\(stream.rawValue)' FOR UPDATE"), logger: Logger(label: "tests"))
    }

    /// Waits until a backend running `procedure` (a name prefix) of the store in `schema` waits for a lock on the
    /// server, and returns its process id.
    @discardableResult
    func backendWaitingForALock(in schema: String, calling procedure: String) async throws -> Int32 {
        var waiting: Int32?
        for _ in 0..<500 where waiting == nil {
            let rows = try await TestDatabase.client.query("""
                SELECT pid FROM pg_stat_activity
                WHERE wait_event_type = 'Lock' AND state = 'active' AND query LIKE \("%\"" + schema + "\"." + procedure + "%")
                """)
            for try await pid in rows.decode(Int32.self) { waiting = pid }
            if waiting == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        return try #require(waiting, "no call of \(procedure) reached the lock")
    }

    /// Holds the row of `stream` so that an append to it waits inside its batch, which keeps the store's one append
    /// slot busy (the store must have one: `concurrentRoundTrips: 1`); starts `queued` appends, which wait in the
    /// store for the next batch; then lets everything go.
    /// Returns the results of the queued appends, in the order given.
    func withHeldBatch(
        _ store: PostgresEventStore, holding stream: StreamID, first: AppendRequest, queued: [AppendRequest]
    ) async throws -> (first: Result<AppendResult, any Error>, queued: [Result<AppendResult, any Error>]) {
        let schema = store.configuration.schema
        return try await withDedicatedConnection { blocker in
            try await lockRow(of: stream, in: schema, on: blocker)
            let firstTask = Task { () -> Result<AppendResult, any Error> in
                do { return .success(try await store.append(first)) } catch { return .failure(error) }
            }
            try await backendWaitingForALock(in: schema, calling: "append_events_batch")
            // One at a time, so that they queue, and so go into the batch, in the order given.
            var tasks: [Task<Result<AppendResult, any Error>, Never>] = []
            for (index, request) in queued.enumerated() {
                tasks.append(Task { () -> Result<AppendResult, any Error> in
                    do { return .success(try await store.append(request)) } catch { return .failure(error) }
                })
                for _ in 0..<500 where store.waitingAppends <= index { try await Task.sleep(for: .milliseconds(10)) }
                try #require(store.waitingAppends == index + 1, "an append did not queue behind the first")
            }
            try await blocker.query("ROLLBACK", logger: Logger(label: "tests"))
            var results: [Result<AppendResult, any Error>] = []
            for task in tasks { results.append(await task.value) }
            return (await firstTask.value, results)
        }
    }

    @Test("appends that share a batch each get their own verdict")
    func batchVerdicts() async throws {
        try await PostgresEventStore.withTestStore(concurrentRoundTrips: 1) { store in
            let c = SampleBank.account(3), d = SampleBank.account(4)
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            let key = try IdempotencyKey("batch-key")
            let (first, queued) = try await withHeldBatch(store, holding: a, first: AppendRequest(events: [try event(2, to: a)], expectations: [a: .exact(1)]), queued: [
                AppendRequest(events: [try event(3, to: b)], expectations: [b: .exact(0)]),
                AppendRequest(events: [try event(4, to: c)], expectations: [c: .exact(5)]),
                AppendRequest(events: [try event(5, to: d)], idempotencyKey: key),
                AppendRequest(events: [try event(6, to: d), try event(7, to: b)], idempotencyKey: key),
                AppendRequest(events: [try event(8, to: b)], expectations: [b: .exact(1), a: .exact(2)]),
            ])
            #expect(try first.get().streamVersions == [a: 2])
            let committedB = try queued[0].get()
            #expect(committedB.outcome == .committed)
            #expect(committedB.streamVersions == [b: 1])
            do {
                _ = try queued[1].get()
                Issue.record("an append with a stale expectation committed")
            } catch let error as EventStoreError {
                #expect(error.code == .versionConflict)
                #expect(error.conflicts.map(\.actual) == [0])
            }
            let keyed = try queued[2].get(), again = try queued[3].get()
            #expect(keyed.outcome == .committed)
            #expect(again.outcome == .duplicate)
            #expect(again.events == keyed.events)
            #expect(again.streamVersions == [d: 1])
            let last = try queued[4].get()
            #expect(last.streamVersions == [a: 2, b: 2], "a later append in the batch sees the versions the earlier ones left")
            let all = try await store.readAll(after: 0, limit: 100)
            #expect(all.map(\.globalPosition) == Array(1...all.count), "positions have no gaps")
            #expect(all.count == 5)
            #expect(try await store.read([a, b, c, d]).versions == [a: 2, b: 2, c: 0, d: 1])
        }
    }

    /// With two slots, a batch held up on a lock does not hold up the appends behind it once they have company:
    /// a lone one waits, a second one takes it along in a batch of their own, which commits while the first is held.
    @Test("a second batch goes beside a held one once it has company")
    func secondBatchBesideAHeldOne() async throws {
        try await PostgresEventStore.withTestStore(concurrentRoundTrips: 2) { store in
            let c = SampleBank.account(3)
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            let schema = store.configuration.schema
            try await withDedicatedConnection { blocker in
                try await lockRow(of: a, in: schema, on: blocker)
                let held = Task { try await store.append(AppendRequest(events: [try event(2, to: a)])) }
                try await backendWaitingForALock(in: schema, calling: "append_events_batch")
                let lone = Task { try await store.append(AppendRequest(events: [try event(3, to: b)])) }
                for _ in 0..<500 where store.waitingAppends == 0 { try await Task.sleep(for: .milliseconds(10)) }
                try #require(store.waitingAppends == 1, "a lone append did not wait beside the held batch")
                try await Task.sleep(for: .milliseconds(100))
                #expect(store.waitingAppends == 1)
                let companion = try await store.append(AppendRequest(events: [try event(4, to: c)]))
                #expect(companion.streamVersions == [c: 1])
                #expect(try await lone.value.streamVersions == [b: 1])
                try await blocker.query("ROLLBACK", logger: Logger(label: "tests"))
                #expect(try await held.value.streamVersions == [a: 2])
            }
        }
    }

    @Test("a batch the server refuses as a whole is appended one by one")
    func batchFallback() async throws {
        try await PostgresEventStore.withTestStore(concurrentRoundTrips: 1) { store in
            let stored = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            var clash = try event(2, to: b)
            clash.id = stored.events[0].id
            let (first, queued) = try await withHeldBatch(store, holding: a, first: AppendRequest(events: [try event(3, to: a)]), queued: [
                AppendRequest(events: [clash]),
                AppendRequest(events: [try event(4, to: b)], expectations: [b: .exact(0)]),
            ])
            #expect(try first.get().streamVersions == [a: 2])
            do {
                _ = try queued[0].get()
                Issue.record("an event id was stored twice")
            } catch let error as EventStoreError {
                #expect(error.code == .invalidRequest)
            }
            #expect(try queued[1].get().streamVersions == [b: 1])
            #expect(try await store.read([a, b]).versions == [a: 2, b: 1])
        }
    }
}
