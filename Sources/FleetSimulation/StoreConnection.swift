import EventCore
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Logging
import PostgresNIO

/// An open event store and how to close it.
public struct StoreConnection: Sendable {
    /// The store.
    public let store: any EventStore
    /// What it is, for logs (no credentials).
    public let description: String
    private let closer: @Sendable () async -> Void

    /// Opens the store a worker configuration names: a `postgres://` URL (with an optional `schema=NAME`
    /// query parameter, `eventcore` by default), or a SQLite file path (optionally written `sqlite://PATH`).
    public static func open(_ url: String, maximumPayloadBytes: Int, logger: Logger) async throws -> StoreConnection {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            var components = URLComponents(string: url)
            let schema = components?.queryItems?.first { $0.name == "schema" }?.value ?? "eventcore"
            let remaining = components?.queryItems?.filter { $0.name != "schema" } ?? []
            components?.queryItems = remaining.isEmpty ? nil : remaining
            let configuration = try PostgresURL.clientConfiguration(components?.string ?? url)
            // One connection first: a wrong address, password or certificate is reported now and plainly,
            // where the pool would retry it in the background.
            try await PostgresURL.checkConnection(components?.string ?? url, logger: logger)
            let client = PostgresClient(configuration: configuration, eventLoopGroup: PostgresURL.eventLoopGroup, backgroundLogger: logger)
            // The pool's run task is under way before the store leases its first connection.
            let running = await client.startRunning()
            do {
                let store = try await PostgresEventStore.start(
                    client: client, configuration: .init(schema: schema, maximumPayloadBytes: maximumPayloadBytes), logger: logger)
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

    /// Closes the store.
    public func close() async { await closer() }
}
