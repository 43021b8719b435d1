import EventCore
import EventCoreTestKit
import EventStoreSQLite
import Foundation
import SQLiteNIO
import Testing

@Suite("SQLite store")
struct SQLiteStoreTests {
    let a = SampleBank.account(1)

    func event(_ amount: Int, to stream: StreamID, bytes: Int? = nil) throws -> NewEvent {
        let encoded = try EventCodec().encode(SampleBank.Event.deposited(amount: amount))
        return NewEvent(streamID: stream, eventType: encoded.eventType, payload: bytes.map { Data(repeating: 0x20, count: $0) } ?? encoded.payload)
    }

    @Test("the payload limit is configurable and its error is clear")
    func payloadLimit() async throws {
        try await TestFiles.withSQLiteStore(maximumPayloadBytes: 1024) { store, _ in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a, bytes: 1024)]))
            do {
                _ = try await store.append(AppendRequest(events: [try event(1, to: a, bytes: 1025)]))
                Issue.record("an oversized payload was stored")
            } catch let error as EventStoreError {
                #expect(error.code == .payloadTooLarge)
                #expect(error.message.contains("1025 bytes"))
                #expect(error.message.contains("limit is 1024"))
            }
            #expect(try await store.read(stream: a).version(of: a) == 1)
        }
    }

    @Test("a second store on the same file sees the first one's events and conflicts with it")
    func sharedFile() async throws {
        try await TestFiles.withSQLiteStore { first, path in
            let second = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
            do {
                _ = try await first.append(AppendRequest(events: [try event(5, to: a)], expectations: [a: .noStream]))
                #expect(try await second.read(stream: a).version(of: a) == 1)
                await #expect(throws: EventStoreError.self) {
                    try await second.append(AppendRequest(events: [try event(6, to: a)], expectations: [a: .noStream]))
                }
                let appended = try await second.append(AppendRequest(events: [try event(6, to: a)], expectations: [a: .exact(1)]))
                #expect(appended.events.map(\.streamVersion) == [2])
                #expect(try await first.readAll(after: 0, limit: 10).count == 2)
                try await second.close()
            } catch {
                try? await second.close()
                throw error
            }
        }
    }

    @Test("reopening keeps events and migrations run once")
    func reopen() async throws {
        let path = TestFiles.databasePath()
        defer { TestFiles.remove(path) }
        let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
        _ = try await store.append(AppendRequest(events: [try event(5, to: a)]))
        try await store.close()
        let reopened = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
        let events = try await reopened.read(stream: a).events
        try await reopened.close()
        #expect(events.count == 1)
    }

    @Test("a corrupted row is reported with its position, not dropped")
    func corruptedRow() async throws {
        try await TestFiles.withSQLiteStore { store, path in
            _ = try await store.append(AppendRequest(events: [try event(1, to: a)]))
            let raw = try await SQLiteConnection.open(storage: .file(path: path))
            _ = try await raw.query("PRAGMA busy_timeout = 5000")
            _ = try await raw.query(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, payload, recorded_at) VALUES (?, ?, 1, 'T', x'00', 0)",
                [.text(EventID().description), .text("bad\nstream")]
            )
            try await raw.close()
            do {
                _ = try await store.readAll(after: 0, limit: 10)
                Issue.record("the corrupted row was not reported")
            } catch let error as EventStoreError {
                #expect(error.code == .corruptedRecord)
                #expect(error.globalPosition == 2)
            }
            #expect(try await store.readAll(after: 0, limit: 1).count == 1)
        }
    }

    @Test("an unwritable location fails with a clear error")
    func unwritableLocation() async throws {
        do {
            _ = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: "/nonexistent-directory/store.sqlite"))
            Issue.record("a store opened in a missing directory")
        } catch let error as EventStoreError {
            #expect(error.code == .storeUnavailable)
        }
    }
}
