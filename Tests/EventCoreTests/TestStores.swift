import EventCore
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Where the tests' PostgreSQL is: `POSTGRES_URL`, or the local server that `scripts/postgres start` runs.
enum TestDatabase {
    static let url = ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet"

    /// host, port, user, password, database parsed from ``url``.
    static var parts: (host: String, port: Int, user: String, password: String, database: String) {
        let components = URLComponents(string: url)
        return (
            components?.host ?? "127.0.0.1", components?.port ?? 5432, components?.user ?? "fleet",
            components?.password ?? "fleet", String((components?.path ?? "/fleet").dropFirst())
        )
    }

    static func clientConfiguration() -> PostgresClient.Configuration {
        let parts = parts
        var configuration = PostgresClient.Configuration(
            host: parts.host, port: parts.port, username: parts.user, password: parts.password, database: parts.database, tls: .disable
        )
        configuration.options.maximumConnections = 24
        return configuration
    }

    /// One pool for the whole test process, running until the process ends.
    private static let pool: (client: PostgresClient, running: Task<Void, Never>) = {
        let client = PostgresClient(configuration: clientConfiguration(), backgroundLogger: Logger(label: "tests.postgres"))
        return (client, Task { _ = await client.startRunning() })
    }()

    /// The pool, once it runs (a connection is never leased before).
    static var client: PostgresClient {
        get async {
            await pool.running.value
            return pool.client
        }
    }

    /// A fresh schema name, unique across parallel tests and processes.
    static func uniqueSchema(_ prefix: String = "t") -> String {
        "\(prefix)_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))"
    }

    /// A migrated store in a fresh schema.
    /// `concurrentRoundTrips` nil keeps the store's default.
    static func makeStore(
        maximumPayloadBytes: Int = 1 << 20, concurrentRoundTrips: Int? = nil, schema: String = uniqueSchema()
    ) async throws -> PostgresEventStore {
        var configuration = PostgresEventStore.Configuration(schema: schema, maximumPayloadBytes: maximumPayloadBytes)
        if let concurrentRoundTrips { configuration.concurrentRoundTrips = concurrentRoundTrips }
        return try await PostgresEventStore.start(client: await client, configuration: configuration)
    }

    /// Drops the store's schema.
    static func drop(_ store: PostgresEventStore) async {
        _ = try? await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(store.configuration.schema)\" CASCADE"))
    }
}

/// Temporary SQLite database files, removed after use.
enum TestFiles {
    static func databasePath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("eventcore-\(UUID().uuidString).sqlite").path
    }

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// Opens a store on a new file, runs `body`, closes the store and removes the file.
    static func withSQLiteStore<T>(
        maximumPayloadBytes: Int = 1 << 20, _ body: (SQLiteEventStore, String) async throws -> T
    ) async throws -> T {
        let path = databasePath()
        defer { remove(path) }
        let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path, maximumPayloadBytes: maximumPayloadBytes))
        do {
            let value = try await body(store, path)
            try await store.close()
            return value
        } catch {
            try? await store.close()
            throw error
        }
    }
}

extension PostgresEventStore {
    /// Runs `body` with a store in a fresh schema and drops the schema afterwards.
    static func withTestStore<T>(
        maximumPayloadBytes: Int = 1 << 20, concurrentRoundTrips: Int? = nil, _ body: (PostgresEventStore) async throws -> T
    ) async throws -> T {
        let store = try await TestDatabase.makeStore(maximumPayloadBytes: maximumPayloadBytes, concurrentRoundTrips: concurrentRoundTrips)
        do {
            let value = try await body(store)
            await TestDatabase.drop(store)
            return value
        } catch {
            await TestDatabase.drop(store)
            throw error
        }
    }
}
