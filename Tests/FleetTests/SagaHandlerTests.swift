import EventCore
import EventStoreSQLite
import Fleet
import Foundation
import OrderFulfillment
import Processes
import Testing

@Suite("Saga requests handled concurrently on the embedded store")
struct SagaHandlerTests {
    @Test func everyTripEndsAndItsEndIsPublished() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("saga-\(UUID().uuidString).sqlite").path
        let store = try await SQLiteEventStore.open(.init(path: path))
        let runtime = ProcessRuntime(executor: CommandExecutor(store: store))
        for (kind, id) in [(TravelResourceKind.hotel, "grand"), (.flight, "fl-100"), (.car, "compact")] {
            _ = try await runtime.execute(try AddTravelCapacity(kind, id: id, units: 1000))
        }
        let handler = SagaMessageHandler<TravelBookingSaga>(eventType: "TripBookingRequested", runner: SagaRunner(runtime: runtime))
        let trips = 200
        let ends = try await withThrowingTaskGroup(of: (String, [String]).self) { group in
            for index in 0..<trips {
                group.addTask {
                    let tripID = "trip-\(index)"
                    let flight = index % 5 == 0 ? "fl-sold-out" : "fl-100"
                    let saga = TravelBookingSaga(tripID: tripID, hotel: .init(resourceID: "grand", bookingID: "\(tripID)-h"),
                                                 flight: .init(resourceID: flight, bookingID: "\(tripID)-f"),
                                                 car: .init(resourceID: "compact", bookingID: "\(tripID)-c"))
                    let envelope = Envelope(messageID: "m-\(index)", eventType: "TripBookingRequested", body: try JSONEncoder().encode(saga))
                    // As the worker does: a transient failure (a hot hotel kept conflicting, the saga stopped
                    // mid-way) brings the same request back later.
                    var last = ""
                    for attempt in 0..<20 {
                        do {
                            let outcome = try await handler.handle(envelope)
                            return (tripID, outcome.publications.map(\.envelope.eventType))
                        } catch {
                            last = "\(error)"
                            // The worker's redelivery backoff, shortened: 10 ms doubling to at most 320 ms.
                            try await Task.sleep(for: .milliseconds(10 << min(attempt, 5)))
                        }
                    }
                    return (tripID, ["error: \(last)"])
                }
            }
            var ends: [String: [String]] = [:]
            for try await (trip, types) in group { ends[trip] = types }
            return ends
        }
        let unended = ends.filter { !$0.value.contains("ProcessCompleted") && !$0.value.contains("ProcessFailed") }
        #expect(unended.isEmpty, "\(unended.count) trips did not publish their end, e.g. \(Array(unended.prefix(3)))")
        #expect(ends.values.filter { $0.contains("ProcessCompleted") }.count == trips - trips / 5)
        try await store.close()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}
