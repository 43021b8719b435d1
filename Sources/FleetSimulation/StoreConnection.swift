import EventCore
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Logging
import PostgresNIO

/// An open event store and how to close it.
struct StoreConnection: Sendable {
    let store: any EventStore
    let description: String
    private let closer: @Sendable () async -> Void

    /// Opens the store a worker configuration names: a `postgres://` URL, or a SQLite file path (optionally
    /// written `sqlite://PATH`).
    static func open(_ url: String, maximumPayloadBytes: Int, logger: Logger) async throws -> StoreConnection {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            let configuration = try PostgresURL.clientConfiguration(url)
            let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
            let running = Task { await client.run() }
            do {
                let store = try await PostgresEventStore.start(
                    client: client, configuration: .init(maximumPayloadBytes: maximumPayloadBytes), logger: logger)
                return StoreConnection(store: store, description: "PostgreSQL at \(configuration.host ?? "?")") {
                    running.cancel()
                }
            } catch {
                running.cancel()
                throw error
            }
        }
        let path = url.hasPrefix("sqlite://") ? String(url.dropFirst("sqlite://".count)) : url
        let store = try await SQLiteEventStore.open(.init(path: path, maximumPayloadBytes: maximumPayloadBytes), logger: logger)
        return StoreConnection(store: store, description: "SQLite at \(path)") {
            try? await store.close()
        }
    }

    private init(store: any EventStore, description: String, closer: @escaping @Sendable () async -> Void) {
        self.store = store
        self.description = description
        self.closer = closer
    }

    func close() async { await closer() }
}
