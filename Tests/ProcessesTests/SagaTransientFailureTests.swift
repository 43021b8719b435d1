import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Synchronization
import Testing

/// A travel world whose store injects faults: conflicts from a competing writer on the hotel stream, and
/// scripted unavailability. The executor retries a conflict once, the saga's policy twice, so a run gives up
/// after 2 × 3 conflicting appends of one command.
struct FaultyTravelWorld {
    let base = InMemoryEventStore()
    let store: FaultInjectingEventStore
    let runner: SagaRunner
    let clock = ManualClock()
    static let hotel = "grand"

    /// - Parameters:
    ///   - hotelEventType: the event type (`TravelBooked`, `TravelBookingCancelled`) whose appends to the hotel
    ///     stream a competing writer beats, `competingAppends` times.
    ///   - closingOnLastRace: the competing writer's last write closes the hotel's cancellations (the stay
    ///     began), rather than adding a room.
    init(hotelEventType: String, competingAppends: Int, closingOnLastRace: Bool = false) throws {
        let base = self.base
        let hotelStream = try TravelResourceKind.hotel.stream(Self.hotel)
        let competing = Countdown(competingAppends)
        store = FaultInjectingEventStore(wrapping: base, beforeAppend: { request in
            guard request.events.contains(where: { $0.streamID == hotelStream && $0.eventType == hotelEventType }) else { return }
            guard let left = competing.take() else { return }
            // Another writer commits to the hot hotel first: this append meets a real version conflict.
            let other = CommandExecutor(store: base)
            if closingOnLastRace && left == 0 {
                _ = try await other.execute(try CloseTravelCancellations(.hotel, id: Self.hotel))
            } else {
                _ = try await other.execute(try AddTravelCapacity(.hotel, id: Self.hotel, units: 1))
            }
        })
        let executor = CommandExecutor(
            store: store,
            configuration: CommandExecutor.Configuration(retryPolicy: RetryPolicy(maxRetries: 1, backoff: .fixed(.milliseconds(1)), jitter: 0)),
            clock: ImmediateClock(), unitRandom: { 0 }
        )
        runner = SagaRunner(runtime: ProcessRuntime(executor: executor), sleeper: ImmediateClock(), clock: clock)
    }

    /// Appends one run of the saga needs to give up on a command: two executor attempts, three saga attempts.
    static let conflictsToGiveUp = 6

    func stock(hotel: Int = 5, flight: Int = 5, car: Int = 5) async throws {
        let executor = CommandExecutor(store: base)
        _ = try await executor.execute(try AddTravelCapacity(.hotel, id: Self.hotel, units: hotel))
        _ = try await executor.execute(try AddTravelCapacity(.flight, id: "LH400", units: flight))
        _ = try await executor.execute(try AddTravelCapacity(.car, id: "fra", units: car))
    }

    func run(_ trip: String = "trip-1") async throws -> SagaReport {
        try await runner.run(TravelWorld.saga(trip, maxRetries: 2))
    }

    func sagaEventTypes(_ trip: String = "trip-1") async throws -> [String] {
        try await base.read(stream: try TravelBookingSaga.sagaID(for: trip)).events.map(\.eventType)
    }

    func hotelEvents(_ type: String) async throws -> Int {
        try await base.read(stream: try TravelResourceKind.hotel.stream(Self.hotel)).events.filter { $0.eventType == type }.count
    }

    func activeHotelBookings() async throws -> Set<String> {
        var inventory = TravelInventory()
        let codec = EventCodec()
        for stored in try await base.read(stream: try TravelResourceKind.hotel.stream(Self.hotel)).events {
            if let event = try codec.decode(stored, as: TravelResourceEvent.self) { inventory.apply(event) }
        }
        return inventory.activeBookings
    }
}

/// A count shared with a store's hook.
final class Countdown: Sendable {
    private let count: Mutex<Int>

    init(_ count: Int) {
        self.count = Mutex(count)
    }

    /// Takes one; returns how many are left, or `nil` when none was left to take.
    func take() -> Int? {
        count.withLock { count in
            guard count > 0 else { return nil }
            count -= 1
            return count
        }
    }
}

/// Runs `body` and returns the error it threw, recording an issue when it returned.
private func transientError(_ body: () async throws -> SagaReport, _ comment: Comment) async -> (any Error)? {
    do {
        let report = try await body()
        Issue.record("the run returned \(report.phase) instead of throwing: \(comment)")
        return nil
    } catch {
        #expect(SagaRunner.isTransient(error), "\(error)")
        return error
    }
}

@Suite("Saga runs through transient store failures")
struct SagaTransientFailureTests {
    @Test("a compensation that only meets version conflicts throws and resumes; it never needs attention")
    func compensationConflicts() async throws {
        let world = try FaultyTravelWorld(hotelEventType: "TravelBookingCancelled", competingAppends: FaultyTravelWorld.conflictsToGiveUp + 2)
        try await world.stock(car: 0)

        // The car is sold out; the flight is cancelled; the hotel's cancellation loses every race of this run.
        let error = await transientError({ try await world.run() }, "the hotel's cancellation kept conflicting")
        #expect((error as? EventStoreError)?.code == .versionConflict)
        let types = try await world.sagaEventTypes()
        #expect(types.suffix(2) == ["CompensationStepCompleted", "CompensationStepStarted"])
        #expect(!types.contains("CompensationStepFailed"))
        #expect(!types.contains("SagaNeedsAttention"))
        #expect(!types.contains("ProcessFailed"))
        #expect(try await world.runner.state(of: try TravelBookingSaga.sagaID(for: "trip-1")).phase == .compensating)
        #expect(try await world.activeHotelBookings() == ["trip-1-hotel"])

        // The request comes back: two more conflicts are absorbed in place, then the hotel is cancelled once.
        let report = try await world.run()
        #expect(report.phase == .compensated)
        #expect(report.state.compensatedSteps == ["book_flight", "book_hotel"])
        #expect(report.state.compensationFailures.isEmpty)
        #expect(try await world.activeHotelBookings().isEmpty)
        #expect(try await world.hotelEvents("TravelBookingCancelled") == 1)
        let final = try await world.sagaEventTypes()
        #expect(final.suffix(2) == ["CompensationCompleted", "ProcessFailed"])
        #expect(!final.contains("CompensationStepFailed"))
    }

    @Test("an unavailable store during a compensation throws and records nothing; a lost reply is not a second cancellation")
    func compensationUnavailable() async throws {
        let world = try FaultyTravelWorld(hotelEventType: "TravelBookingCancelled", competingAppends: FaultyTravelWorld.conflictsToGiveUp)
        try await world.stock(car: 0)
        _ = await transientError({ try await world.run() }, "the hotel's cancellation kept conflicting")
        let before = try await world.sagaEventTypes()

        // Next run: the hotel's cancellation is the first append. The store is down for all three attempts.
        world.store.injectIntoNextAppends(.unavailableBeforeAppend, .unavailableBeforeAppend, .unavailableBeforeAppend)
        let error = await transientError({ try await world.run() }, "the store was unavailable")
        #expect((error as? EventStoreError)?.code == .storeUnavailable)
        #expect(try await world.sagaEventTypes() == before)
        #expect(try await world.activeHotelBookings() == ["trip-1-hotel"])

        // Next run: the cancellation commits but its reply is lost; the retry finds it by its idempotency key.
        world.store.injectIntoNextAppends(.unavailableAfterAppend)
        let report = try await world.run()
        #expect(report.phase == .compensated)
        #expect(try await world.hotelEvents("TravelBookingCancelled") == 1)
        #expect(!(try await world.sagaEventTypes()).contains("CompensationStepFailed"))
    }

    @Test("a business refusal of a compensation still needs attention after the policy's retries")
    func refusalStillNeedsAttention() async throws {
        // The hotel's cancellation races twice; the second race closes cancellations (the stay began).
        let world = try FaultyTravelWorld(hotelEventType: "TravelBookingCancelled", competingAppends: 2, closingOnLastRace: true)
        try await world.stock(car: 0)
        // The conflicts are retried in place and not counted; the refusal then fails three attempts.
        let report = try await world.run()
        #expect(report.phase == .needsAttention)
        #expect(report.state.attention?.stepName == "book_hotel")
        #expect(report.state.attention?.attempts == 3)
        #expect(report.state.attention?.reason.contains("no longer accepts cancellations") == true)
        #expect(try await world.sagaEventTypes().filter { $0 == "CompensationStepFailed" }.count == 3)
        #expect(try await world.activeHotelBookings() == ["trip-1-hotel"])
    }

    @Test("a forward step that only meets version conflicts throws, is not compensated, and resumes")
    func stepConflicts() async throws {
        let world = try FaultyTravelWorld(hotelEventType: "TravelBooked", competingAppends: FaultyTravelWorld.conflictsToGiveUp)
        try await world.stock()

        let error = await transientError({ try await world.run() }, "the hotel booking kept conflicting")
        #expect((error as? EventStoreError)?.code == .versionConflict)
        // The step started; its outcome is not recorded, and nothing was compensated.
        #expect(try await world.sagaEventTypes() == ["ProcessStarted", "SagaDefined", "SagaStepStarted"])
        #expect(try await world.runner.state(of: try TravelBookingSaga.sagaID(for: "trip-1")).nextAction == .runStep(0))

        // The store is down for the resumed step, then answers but loses the reply of the booking.
        world.store.injectIntoNextAppends(.unavailableBeforeAppend, .unavailableBeforeAppend, .unavailableBeforeAppend)
        let unavailable = await transientError({ try await world.run() }, "the store was unavailable")
        #expect((unavailable as? EventStoreError)?.code == .storeUnavailable)
        #expect(try await world.sagaEventTypes() == ["ProcessStarted", "SagaDefined", "SagaStepStarted"])

        world.store.injectIntoNextAppends(.unavailableAfterAppend)
        let report = try await world.run()
        #expect(report.phase == .completed)
        #expect(try await world.hotelEvents("TravelBooked") == 1)
        let types = try await world.sagaEventTypes()
        #expect(!types.contains("SagaStepFailed"))
        #expect(!types.contains("CompensationStarted"))
        #expect(types.filter { $0 == "SagaStepStarted" }.count == 3)
    }

    @Test("a run never returns an unfinished saga: it ends it or throws, however stale the store's reads")
    func staleReads() async throws {
        let base = InMemoryEventStore()
        let stale = StaleSagaReads(base: base)
        let world = TravelWorld(store: stale)
        try await world.stock()
        let sagaID = try TravelBookingSaga.sagaID(for: "trip-1")

        // Reads of the saga stream lag two events behind: the run must not take them for the saga's state.
        stale.lag(sagaID, by: 2)
        do {
            let report = try await world.runner.run(TravelWorld.saga())
            Issue.record("the run returned \(report.phase) from reads that lag behind its own records")
        } catch {
            #expect(SagaRunner.isTransient(error), "\(error)")
        }
        // Whatever the runner did, the saga's real stream is consistent; with fresh reads a run ends it.
        stale.lag(sagaID, by: 0)
        let report = try await world.runner.run(TravelWorld.saga())
        #expect(report.phase == .completed)
        #expect(try await world.activeBookings() == ["trip-1-hotel", "trip-1-flight", "trip-1-car"])
        #expect(try await base.read(stream: sagaID).events.map(\.eventType).filter { $0 == "SagaStepCompleted" }.count == 3)
    }

    @Test("many sagas on one hot hotel under random conflicts all end, none needs attention", arguments: [UInt64(1), 2, 3])
    func hotHotel(_ seed: UInt64) async throws {
        let base = InMemoryEventStore()
        let store = FaultInjectingEventStore(wrapping: base, seed: seed, rates: .init(unavailableBeforeAppend: 0.05, unavailableAfterAppend: 0.05, conflict: 0.3))
        let executor = CommandExecutor(
            store: store,
            configuration: CommandExecutor.Configuration(retryPolicy: RetryPolicy(maxRetries: 2, backoff: .fixed(.milliseconds(1)), jitter: 0)),
            clock: ImmediateClock(), unitRandom: { 0 }
        )
        let runner = SagaRunner(runtime: ProcessRuntime(executor: executor), sleeper: ImmediateClock(), clock: ManualClock())
        let setup = CommandExecutor(store: base)
        for (kind, id) in [(TravelResourceKind.hotel, "grand"), (.flight, "LH400"), (.car, "fra")] {
            _ = try await setup.execute(try AddTravelCapacity(kind, id: id, units: 100))
        }
        let trips = 24
        let phases = try await withThrowingTaskGroup(of: (String, SagaPhase?).self) { group in
            for index in 0..<trips {
                group.addTask {
                    let trip = "hot-\(index)"
                    var saga = TravelWorld.saga(trip, maxRetries: 1)
                    if index % 4 == 0 { saga.flight.resourceID = "sold-out" }
                    // As a worker: a thrown error brings the request back; a returned report is an end.
                    for _ in 0..<40 {
                        do {
                            return (trip, try await runner.run(saga).phase)
                        } catch {
                            #expect(SagaRunner.isTransient(error), "\(trip): \(error)")
                        }
                    }
                    return (trip, nil)
                }
            }
            var phases: [String: SagaPhase?] = [:]
            for try await (trip, phase) in group { phases[trip] = phase }
            return phases
        }
        #expect(phases.values.filter { $0 == .completed }.count == trips - trips / 4, "\(phases)")
        #expect(phases.values.filter { $0 == .compensated }.count == trips / 4, "\(phases)")
        var hotel = TravelInventory()
        let codec = EventCodec()
        for stored in try await base.read(stream: try TravelResourceKind.hotel.stream("grand")).events {
            if let event = try codec.decode(stored, as: TravelResourceEvent.self) { hotel.apply(event) }
        }
        #expect(hotel.activeBookings.count == trips - trips / 4)
        #expect(hotel.cancelledBookings.count == trips / 4)
    }
}

/// A store whose reads of chosen streams lag behind: they leave out the newest events, as a reader on an old
/// snapshot would.
final class StaleSagaReads: EventStore {
    let base: any EventStore
    private let lags = Mutex<[StreamID: Int]>([:])

    init(base: any EventStore) {
        self.base = base
    }

    func lag(_ stream: StreamID, by events: Int) {
        lags.withLock { $0[stream] = events }
    }

    func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        let snapshot = try await base.read(streams)
        let lags = lags.withLock { $0 }
        var versions = snapshot.versions
        var dropped: Set<Int> = []
        for stream in streams {
            guard let lag = lags[stream], lag > 0 else { continue }
            let kept = max(0, snapshot.version(of: stream) - lag)
            versions[stream] = kept
            for event in snapshot.events where event.streamID == stream && event.streamVersion > kept { dropped.insert(event.globalPosition) }
        }
        return StreamsSnapshot(events: snapshot.events.filter { !dropped.contains($0.globalPosition) }, versions: versions)
    }

    func append(_ request: AppendRequest) async throws -> AppendResult { try await base.append(request) }
    func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? { try await base.appendResult(forIdempotencyKey: key) }
    func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] { try await base.readAll(after: position, limit: limit) }
    func events(matching query: EventQuery) async throws -> [StoredEvent] { try await base.events(matching: query) }
}
