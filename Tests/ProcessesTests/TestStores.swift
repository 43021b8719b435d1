import EventCore
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Logging
import PostgresNIO

/// The tests' PostgreSQL: `POSTGRES_URL`, or the local server on loopback. Each test gets its own schema.
enum TestDatabase {
    static let url = ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet"

    static func clientConfiguration() -> PostgresClient.Configuration {
        let components = URLComponents(string: url)
        var configuration = PostgresClient.Configuration(
            host: components?.host ?? "127.0.0.1", port: components?.port ?? 5432,
            username: components?.user ?? "fleet", password: components?.password ?? "fleet",
            database: String((components?.path ?? "/fleet").dropFirst()), tls: .disable
        )
        configuration.options.maximumConnections = 12
        return configuration
    }

    /// One pool for the whole test process.
    private static let pool: (client: PostgresClient, running: Task<Void, Never>) = {
        let client = PostgresClient(configuration: clientConfiguration(), backgroundLogger: Logger(label: "tests.processes.postgres"))
        return (client, Task { _ = await client.startRunning() })
    }()

    /// The pool, once it runs (a connection is never leased before).
    static var client: PostgresClient {
        get async {
            await pool.running.value
            return pool.client
        }
    }

    static func uniqueSchema() -> String {
        "p_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))"
    }

    /// Runs `body` with a store in a fresh schema and drops the schema afterwards.
    static func withStore<T>(_ body: (PostgresEventStore) async throws -> T) async throws -> T {
        let store = try await PostgresEventStore.start(client: await client, configuration: PostgresEventStore.Configuration(schema: uniqueSchema()))
        do {
            let value = try await body(store)
            await drop(store)
            return value
        } catch {
            await drop(store)
            throw error
        }
    }

    private static func drop(_ store: PostgresEventStore) async {
        _ = try? await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(store.configuration.schema)\" CASCADE"))
    }
}

/// A store on a temporary SQLite file, removed afterwards.
enum TestSQLite {
    static func withStore<T>(_ body: (SQLiteEventStore) async throws -> T) async throws -> T {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("processes-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
        do {
            let value = try await body(store)
            try await store.close()
            return value
        } catch {
            try? await store.close()
            throw error
        }
    }
}

/// The three stores a test can run on.
enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case memory, sqlite, postgres

    var description: String { rawValue }

    func withStore<T>(_ body: (any EventStore) async throws -> T) async throws -> T {
        switch self {
        case .memory: try await body(InMemoryEventStore())
        case .sqlite: try await TestSQLite.withStore { try await body($0) }
        case .postgres: try await TestDatabase.withStore { try await body($0) }
        }
    }
}
