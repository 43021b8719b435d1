import EventCore
import FleetSimulation
import Foundation
import Logging
import OrderFulfillment
import Processes
import Testing

/// A store with real processes in it, made by executing the processes' own commands: three orders (two
/// running with a pending timeout each, one failed), a trip that completed and a trip whose compensation
/// failed, so it needs attention (its cause already fixed: a retry compensates it).
enum ProcessFixture {
    /// The process ids of the fixture.
    static let runningOrders = ["order-fulfillment-fx-1", "order-fulfillment-fx-2"]
    static let failedOrder = "order-fulfillment-fx-3"
    static let completedTrip = "travel-booking-trip-done"
    static let stuckTrip = "travel-booking-trip-stuck"
    static var all: [String] { runningOrders + [failedOrder, completedTrip, stuckTrip] }

    /// The stores the tests run on.
    enum Store: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case sqlite, postgres

        var testDescription: String { rawValue }

        /// A new store of this kind: a temporary SQLite path, or a fresh PostgreSQL schema.
        func makeURL(_ prefix: String) -> String {
            switch self {
            case .sqlite:
                return ProcessFixture.temporaryStorePath(prefix)
            case .postgres:
                let base = ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet"
                return base + "?schema=\(prefix.replacingOccurrences(of: "-", with: "_"))_\(UUID().uuidString.prefix(8).lowercased())"
            }
        }

        /// Removes a SQLite store's files (PostgreSQL schemas stay, as the other tests' do).
        func remove(_ url: String) {
            if self == .sqlite { ProcessFixture.removeStore(url) }
        }
    }

    /// A temporary SQLite path.
    static func temporaryStorePath(_ prefix: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString).sqlite").path
    }

    static func removeStore(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// Creates the fixture's processes in the store at `url` (created when it is a new SQLite path).
    static func populate(_ url: String) async throws {
        let connection = try await StoreConnection.open(url, maximumPayloadBytes: 1 << 20, logger: Logger(label: "test.fixture"))
        do {
            try await populate(store: connection.store)
            await connection.close()
        } catch {
            await connection.close()
            throw error
        }
    }

    static func populate(store: any EventStore) async throws {
        let executor = CommandExecutor(store: store)
        let runtime = ProcessRuntime(executor: executor)
        for id in ["fx-1", "fx-2", "fx-3"] {
            _ = try await runtime.execute(try AdvanceOrderProcess(orderID: id, trigger: .orderPlaced, at: Date()))
        }
        _ = try await runtime.execute(try AdvanceOrderProcess(orderID: "fx-3", trigger: .failed(reason: "payment failed: declined"), at: Date()))

        _ = try await executor.execute(try AddTravelCapacity(.hotel, id: "fx-grand", units: 5))
        _ = try await executor.execute(try AddTravelCapacity(.flight, id: "fx-LH400", units: 5))
        _ = try await executor.execute(try AddTravelCapacity(.flight, id: "fx-LH401", units: 5))
        _ = try await executor.execute(try AddTravelCapacity(.car, id: "fx-fra", units: 5))
        _ = try await executor.execute(try AddTravelCapacity(.car, id: "fx-empty", units: 0))
        let policy = RetryPolicy(maxRetries: 1, backoff: .exponential(initial: .milliseconds(5), multiplier: 2, maximum: .milliseconds(20)), jitter: 0)
        let runner = SagaRunner(runtime: runtime)
        let done = try await runner.run(TravelBookingSaga(
            tripID: "trip-done", hotel: .init(resourceID: "fx-grand", bookingID: "done-hotel"),
            flight: .init(resourceID: "fx-LH400", bookingID: "done-flight"), car: .init(resourceID: "fx-fra", bookingID: "done-car"),
            retryPolicy: policy))
        guard done.phase == .completed else { throw FixtureError("trip-done ended \(done.phase)") }

        // The car cannot be booked and the flight's cancellations are closed: the compensation fails.
        _ = try await executor.execute(try CloseTravelCancellations(.flight, id: "fx-LH401"))
        let stuck = try await runner.run(TravelBookingSaga(
            tripID: "trip-stuck", hotel: .init(resourceID: "fx-grand", bookingID: "stuck-hotel"),
            flight: .init(resourceID: "fx-LH401", bookingID: "stuck-flight"), car: .init(resourceID: "fx-empty", bookingID: "stuck-car"),
            retryPolicy: policy))
        guard stuck.phase == .needsAttention else { throw FixtureError("trip-stuck ended \(stuck.phase)") }
        // The cause is fixed; the saga waits for an operator's retry.
        _ = try await executor.execute(try ReopenTravelCancellations(.flight, id: "fx-LH401"))
    }

    struct FixtureError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

/// JSON as the operator's tools write it (ISO 8601 dates).
enum OperatorJSON {
    static func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: data)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try decode(type, Data(text.utf8))
    }
}
