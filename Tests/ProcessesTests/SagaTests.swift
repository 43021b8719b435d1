import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Synchronization
import Testing

/// A travel world on one store: stocked resources, a runner with a clock that never really sleeps.
struct TravelWorld {
    let store: any EventStore
    let runner: SagaRunner
    let clock = ManualClock()

    init(store: any EventStore = InMemoryEventStore(), metrics: ProcessMetrics? = nil) {
        self.store = store
        let executor = CommandExecutor(store: store, clock: ImmediateClock(), unitRandom: { 0 })
        runner = SagaRunner(runtime: ProcessRuntime(executor: executor, metrics: metrics), sleeper: ImmediateClock(), clock: clock)
    }

    var executor: CommandExecutor { runner.runtime.executor }

    static func saga(_ trip: String = "trip-1", maxRetries: Int = 2) -> TravelBookingSaga {
        TravelBookingSaga(
            tripID: trip,
            hotel: .init(resourceID: "grand", bookingID: "\(trip)-hotel"),
            flight: .init(resourceID: "LH400", bookingID: "\(trip)-flight"),
            car: .init(resourceID: "fra", bookingID: "\(trip)-car"),
            retryPolicy: RetryPolicy(maxRetries: maxRetries, backoff: .exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(4)), jitter: 0)
        )
    }

    /// Gives each resource `units` free units (0 leaves it empty, so booking it fails).
    func stock(hotel: Int = 5, flight: Int = 5, car: Int = 5) async throws {
        _ = try await executor.execute(try AddTravelCapacity(.hotel, id: "grand", units: hotel))
        _ = try await executor.execute(try AddTravelCapacity(.flight, id: "LH400", units: flight))
        _ = try await executor.execute(try AddTravelCapacity(.car, id: "fra", units: car))
    }

    func closeCancellations(_ kind: TravelResourceKind, _ id: String) async throws {
        _ = try await executor.execute(try CloseTravelCancellations(kind, id: id))
    }

    func inventory(_ kind: TravelResourceKind, _ id: String) async throws -> TravelInventory {
        var inventory = TravelInventory()
        let codec = EventCodec()
        for stored in try await store.read(stream: try kind.stream(id)).events {
            if let event = try codec.decode(stored, as: TravelResourceEvent.self) { inventory.apply(event) }
        }
        return inventory
    }

    /// The active bookings of the three resources of the default saga.
    func activeBookings() async throws -> [String] {
        var bookings: [String] = []
        for (kind, id) in [(TravelResourceKind.hotel, "grand"), (.flight, "LH400"), (.car, "fra")] {
            bookings += try await inventory(kind, id).activeBookings.sorted()
        }
        return bookings
    }

    func sagaEvents(_ trip: String = "trip-1") async throws -> [ProcessEvent<SagaEvent>] {
        let codec = EventCodec()
        return try await store.read(stream: try TravelBookingSaga.sagaID(for: trip)).events.compactMap {
            try codec.decode($0, as: ProcessEvent<SagaEvent>.self)
        }
    }

    func sagaEventTypes(_ trip: String = "trip-1") async throws -> [String] {
        try await sagaEvents(trip).map(\.eventType)
    }
}

@Suite("Travel booking saga")
struct SagaTests {
    @Test("all three bookings succeed and the saga completes")
    func success() async throws {
        let world = TravelWorld()
        try await world.stock()
        let report = try await world.runner.run(TravelWorld.saga())
        #expect(report.phase == .completed)
        #expect(report.state.statuses == [.completed, .completed, .completed])
        #expect(try await world.activeBookings() == ["trip-1-hotel", "trip-1-flight", "trip-1-car"])
        #expect(try await world.sagaEventTypes() == [
            "ProcessStarted", "SagaDefined",
            "SagaStepStarted", "SagaStepCompleted", "SagaStepStarted", "SagaStepCompleted", "SagaStepStarted", "SagaStepCompleted",
            "ProcessCompleted",
        ])
    }

    @Test("a failed step compensates the completed steps in reverse order", arguments: [0, 1, 2])
    func stepFailure(_ failing: Int) async throws {
        let world = TravelWorld()
        try await world.stock(hotel: failing == 0 ? 0 : 5, flight: failing == 1 ? 0 : 5, car: failing == 2 ? 0 : 5)
        let report = try await world.runner.run(TravelWorld.saga())
        #expect(report.phase == .compensated)
        #expect(try await world.activeBookings().isEmpty)

        let names = TravelBookingSaga.stepNames
        var expected = report.state.statuses
        expected = (0..<3).map { $0 < failing ? .compensated : ($0 == failing ? .failed : .pending) }
        #expect(report.state.statuses == expected)
        // Compensation ran newest first.
        #expect(report.state.compensatedSteps == names.prefix(failing).reversed())
        let events = try await world.sagaEvents()
        let compensated = events.compactMap { event -> String? in
            if case .domain(.compensationStepCompleted(let step)) = event { return step.name }
            return nil
        }
        #expect(compensated == Array(names.prefix(failing).reversed()))
        guard case .domain(.compensationCompleted(let done))? = events.dropLast().last else {
            Issue.record("CompensationCompleted is not the event before the end: \(events)")
            return
        }
        #expect(done.compensatedSteps == Array(names.prefix(failing).reversed()))
        guard case .lifecycle(.failed(let failed))? = events.last else {
            Issue.record("the saga did not end with ProcessFailed")
            return
        }
        #expect(failed.reason.contains("step \(names[failing]) failed"))
        // The failed step's command never ran, the later ones never started.
        #expect(!report.state.startedSteps.contains(where: { $0 > failing }))
    }

    @Test("a compensation that keeps failing is retried by policy, then leaves the saga needing attention")
    func compensationFails() async throws {
        let world = TravelWorld()
        try await world.stock(car: 0)
        try await world.closeCancellations(.flight, "LH400")
        let report = try await world.runner.run(TravelWorld.saga(maxRetries: 2))
        #expect(report.phase == .needsAttention)
        #expect(report.state.attention?.stepName == "book_flight")
        #expect(report.state.attention?.attempts == 3)
        // The flight's compensation failed; the hotel's was not tried yet: nothing is silently done.
        #expect(try await world.activeBookings() == ["trip-1-hotel", "trip-1-flight"])
        let types = try await world.sagaEventTypes()
        #expect(types.filter { $0 == "CompensationStepFailed" }.count == 3)
        #expect(types.last == "SagaNeedsAttention")
        #expect(!types.contains("CompensationCompleted"))
        #expect(!types.contains("ProcessFailed"))

        // Running again does not move it: it waits for an operator.
        let again = try await world.runner.resume(TravelBookingSaga.self, businessID: "trip-1")
        #expect(again.phase == .needsAttention)
        #expect(try await world.sagaEventTypes() == types)

        let catalog = ProcessCatalog(store: world.store)
        let listed = try await catalog.processes(status: .needsAttention)
        #expect(listed.map(\.businessID) == ["trip-1"])
    }

    @Test("an operator resumes compensation after fixing its cause")
    func operatorResumes() async throws {
        let world = TravelWorld()
        try await world.stock(car: 0)
        try await world.closeCancellations(.flight, "LH400")
        #expect(try await world.runner.run(TravelWorld.saga(maxRetries: 1)).phase == .needsAttention)

        // The provider accepts cancellations again; an operator resumes the saga.
        _ = try await world.executor.execute(try ReopenTravelCancellations(.flight, id: "LH400"))
        let resumed = try await world.runner.retryCompensation(TravelBookingSaga.self, businessID: "trip-1", by: "ops")
        #expect(resumed.phase == .compensated)
        #expect(resumed.state.compensatedSteps == ["book_flight", "book_hotel"])
        #expect(try await world.activeBookings().isEmpty)
        let types = try await world.sagaEventTypes()
        #expect(types.contains("CompensationResumed"))
        #expect(types.suffix(2) == ["CompensationCompleted", "ProcessFailed"])
        #expect(try await ProcessCatalog(store: world.store).processes(status: .failed).map(\.businessID) == ["trip-1"])
    }

    @Test("transient store failures of a step or a compensation are retried and the saga still settles")
    func transientFailures() async throws {
        // The hotel booking's append fails twice: the runner retries the step in place.
        let flakyHotel = FlakyStore(base: InMemoryEventStore(), stream: try TravelResourceKind.hotel.stream("grand"), failures: 0)
        let world = TravelWorld(store: flakyHotel)
        try await world.stock()
        flakyHotel.failNext(2, skipping: 0)
        #expect(try await world.runner.run(TravelWorld.saga()).phase == .completed)
        #expect(try await world.activeBookings() == ["trip-1-hotel", "trip-1-flight", "trip-1-car"])

        // The flight's cancellation fails twice, within the policy's two retries: retried in place and
        // compensated, with no failed attempt recorded (an unreachable store is no refusal).
        let flakyFlight = FlakyStore(base: InMemoryEventStore(), stream: try TravelResourceKind.flight.stream("LH400"), failures: 0)
        let world2 = TravelWorld(store: flakyFlight)
        try await world2.stock(car: 0)
        flakyFlight.failNext(2, skipping: 1)
        let report = try await world2.runner.run(TravelWorld.saga(maxRetries: 2))
        #expect(report.phase == .compensated)
        #expect(try await world2.activeBookings().isEmpty)
        #expect(try await world2.sagaEventTypes().filter { $0 == "CompensationStepFailed" }.isEmpty)
    }

    @Test("a runner that stops after any append is taken over by another without doing a step twice")
    func crashAndResume() async throws {
        for crashAfter in 1...14 {
            let base = InMemoryEventStore()
            let world = TravelWorld(store: base)
            try await world.stock(car: crashAfter % 2 == 0 ? 0 : 5)
            let crashing = CrashingStore(base: base, appendsBeforeCrash: crashAfter)
            let crashingRunner = SagaRunner(
                runtime: ProcessRuntime(executor: CommandExecutor(store: crashing, clock: ImmediateClock())),
                sleeper: ImmediateClock(), clock: world.clock
            )
            do {
                _ = try await crashingRunner.run(TravelWorld.saga())
            } catch is CrashingStore.Crash {
            }
            let report: SagaReport
            if try await world.runner.state(of: try TravelBookingSaga.sagaID(for: "trip-1")).lifecycle.status == .notStarted {
                report = try await world.runner.run(TravelWorld.saga())
            } else {
                report = try await world.runner.resume(TravelBookingSaga.self, businessID: "trip-1")
            }
            let expectedPhase: SagaPhase = crashAfter % 2 == 0 ? .compensated : .completed
            #expect(report.phase == expectedPhase, "crash after \(crashAfter) appends")
            let bookings = try await world.activeBookings()
            #expect(bookings == (expectedPhase == .completed ? ["trip-1-hotel", "trip-1-flight", "trip-1-car"] : []), "crash after \(crashAfter)")
            // Each resource stream saw at most one booking of the trip.
            for (kind, id) in [(TravelResourceKind.hotel, "grand"), (.flight, "LH400"), (.car, "fra")] {
                let booked = try await world.store.read(stream: try kind.stream(id)).events.filter { $0.eventType == "TravelBooked" }
                #expect(booked.count <= 1)
            }
        }
    }

    @Test("the saga's definition is stored, so a restarted runner rebuilds the same steps")
    func definitionStored() async throws {
        let world = TravelWorld()
        try await world.stock()
        _ = try await world.runner.run(TravelWorld.saga())
        guard case .domain(.defined(let defined))? = try await world.sagaEvents().dropFirst().first else {
            Issue.record("SagaDefined is not the second event")
            return
        }
        #expect(defined.stepNames == TravelBookingSaga.stepNames)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        #expect(try decoder.decode(TravelBookingSaga.self, from: Data(defined.definition.utf8)) == TravelWorld.saga())
    }

    @Test("resuming a saga that never started is an error")
    func resumeUnknown() async throws {
        let world = TravelWorld()
        await #expect(throws: SagaError.self) { try await world.runner.resume(TravelBookingSaga.self, businessID: "nope") }
    }

    @Test("an observation that no longer fits the saga writes nothing")
    func staleObservation() async throws {
        let world = TravelWorld()
        try await world.stock()
        _ = try await world.runner.run(TravelWorld.saga())
        let sagaID = try TravelBookingSaga.sagaID(for: "trip-1")
        for progress in [SagaProgress.stepSucceeded(0), .stepFailed(1, reason: "late"), .compensationSucceeded(0), .resumeCompensation(by: "ops")] {
            let result = try await world.executor.execute(AdvanceSaga(sagaID: sagaID, progress: progress, at: world.clock.now))
            #expect(result.outcome == .noOp)
        }
    }
}

/// A store that works for a number of appends and then fails every call, like a worker that died.
final class CrashingStore: EventStore {
    struct Crash: Error {}

    let base: any EventStore
    private let remaining: Mutex<Int>

    init(base: any EventStore, appendsBeforeCrash: Int) {
        self.base = base
        remaining = Mutex(appendsBeforeCrash)
    }

    private func check() throws {
        if remaining.withLock({ $0 }) <= 0 { throw Crash() }
    }

    func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        try check()
        return try await base.read(streams)
    }

    func append(_ request: AppendRequest) async throws -> AppendResult {
        try check()
        let result = try await base.append(request)
        remaining.withLock { $0 -= 1 }
        return result
    }

    func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? {
        try check()
        return try await base.appendResult(forIdempotencyKey: key)
    }

    func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] {
        try check()
        return try await base.readAll(after: position, limit: limit)
    }

    func events(matching query: EventQuery) async throws -> [StoredEvent] {
        try check()
        return try await base.events(matching: query)
    }
}

/// A store whose appends to one stream fail with `storeUnavailable` a number of times.
final class FlakyStore: EventStore {
    let base: any EventStore
    let stream: StreamID
    private let plan: Mutex<(skip: Int, fail: Int)>

    init(base: any EventStore, stream: StreamID, failures: Int) {
        self.base = base
        self.stream = stream
        plan = Mutex((0, failures))
    }

    /// Lets `skipping` appends to the stream through, then fails the next `count`.
    func failNext(_ count: Int, skipping: Int) {
        plan.withLock { $0 = (skipping, count) }
    }

    func read(_ streams: [StreamID]) async throws -> StreamsSnapshot { try await base.read(streams) }

    func append(_ request: AppendRequest) async throws -> AppendResult {
        if request.events.contains(where: { $0.streamID == stream }) {
            let fail = plan.withLock { plan -> Bool in
                if plan.skip > 0 { plan.skip -= 1; return false }
                if plan.fail > 0 { plan.fail -= 1; return true }
                return false
            }
            if fail { throw EventStoreError(.storeUnavailable, "injected: the store is unavailable") }
        }
        return try await base.append(request)
    }

    func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? { try await base.appendResult(forIdempotencyKey: key) }
    func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] { try await base.readAll(after: position, limit: limit) }
    func events(matching query: EventQuery) async throws -> [StoredEvent] { try await base.events(matching: query) }
}
