import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Testing

/// An embedded-mode setup: one store, a runtime with captured metrics, a store-backed scheduler on a manual clock.
struct EmbeddedWorld {
    let clock = ManualClock()
    let metrics = CapturingMetricsFactory()
    let store: any EventStore
    let runtime: ProcessRuntime
    let scheduler: StoreTimeoutScheduler

    init(store: any EventStore = InMemoryEventStore()) {
        self.store = store
        runtime = ProcessRuntime(executor: CommandExecutor(store: store, clock: ImmediateClock()), metrics: ProcessMetrics(factory: metrics))
        scheduler = StoreTimeoutScheduler(runtime: runtime, clock: clock, pageSize: 7)
    }

    @discardableResult
    func advance(_ orderID: String, _ trigger: ProcessTrigger) async throws -> ProcessExecution {
        try await runtime.execute(try AdvanceOrderProcess(orderID: orderID, trigger: trigger, at: clock.now))
    }

    func status(_ orderID: String) async throws -> ProcessStatus {
        try await OrderFulfillmentProcess().snapshot(businessID: orderID, in: store).status
    }
}

@Suite("Store-backed timeout scheduler")
struct SchedulerTests {
    @Test("pending timeouts follow the store; jumping days ahead fires, retries and finally fails stalled processes")
    func jumpDays() async throws {
        let world = EmbeddedWorld()
        for id in ["a", "b", "c"] { try await world.advance(id, .orderPlaced) }
        try await world.advance("b", .paymentConfirmed(paymentID: "p"))
        #expect(try await world.scheduler.pending().map(\.processID.rawValue).sorted() == ["order-fulfillment-a", "order-fulfillment-b", "order-fulfillment-c"])

        try await world.advance("c", .failed(reason: "payment failed: declined"))
        #expect(try await world.scheduler.pending().count == 2)
        #expect(try await world.scheduler.fireDueTimeouts().isEmpty)

        world.clock.advance(days: 1)
        let firings = try await world.scheduler.fireDueTimeouts()
        #expect(firings.map(\.outcome).allSatisfy { if case .retryScheduled(1, _) = $0 { true } else { false } })
        #expect(firings.count == 2)

        // Three retries (1 h, 2 h, 4 h), then failure; a week later everything has settled.
        for _ in 0..<10 {
            world.clock.advance(by: .seconds(4 * 3600))
            try await world.scheduler.fireDueTimeouts()
        }
        #expect(try await world.status("a") == .failed(reason: "the process made no progress after 3 retries"))
        #expect(try await world.status("b") == .failed(reason: "the process made no progress after 3 retries"))
        #expect(try await world.scheduler.pending().isEmpty)
    }

    @Test("schedule and cancel through the scheduler, idempotently")
    func scheduleAndCancel() async throws {
        let world = EmbeddedWorld()
        try await world.advance("s", .orderPlaced)
        let processID = try OrderFulfillmentProcess.processID(orderID: "s")
        let original = try #require(try await world.scheduler.pending().first)
        let custom = ScheduledTimeout(processID: processID, timeoutID: "manual-1", dueAt: world.clock.now.addingTimeInterval(60), attempt: 0)
        try await world.scheduler.schedule(custom)
        try await world.scheduler.schedule(custom)
        #expect(try await world.scheduler.pending() == [custom])
        // The superseded timeout arriving later changes nothing.
        world.clock.advance(days: 2)
        #expect(try await world.runtime.fireTimeout(original, at: world.clock.now).outcome == .ignored(.cancelled))

        try await world.scheduler.cancel(CancelledTimeout(processID: processID, timeoutID: "manual-1"))
        try await world.scheduler.cancel(CancelledTimeout(processID: processID, timeoutID: "manual-1"))
        #expect(try await world.scheduler.pending().isEmpty)
        let types = try await world.store.read(stream: processID).events.map(\.eventType)
        #expect(types == ["ProcessStarted", "TimeoutScheduled", "TimeoutCancelled", "TimeoutScheduled", "TimeoutCancelled"])
        #expect(try await world.runtime.fireTimeout(custom, at: world.clock.now).outcome == .ignored(.cancelled))
    }

    @Test("the scheduler's loop fires due timeouts until it is cancelled")
    func loop() async throws {
        let world = EmbeddedWorld()
        try await world.advance("l", .orderPlaced)
        world.clock.advance(days: 1)
        let sleeper = ImmediateClock()
        let task = Task { try await world.scheduler.run(pollingEvery: .seconds(1), sleeper: sleeper) }
        // The loop's sleeps return at once; wait until it recorded the retry, then stop it.
        while try await world.store.read(stream: try OrderFulfillmentProcess.processID(orderID: "l")).events.map(\.eventType).contains("RetryScheduled") == false {
            await Task.yield()
        }
        task.cancel()
        _ = await task.result
        #expect(try await world.scheduler.pending().first?.attempt == 1)
    }
}

@Suite("Process metrics and catalog")
struct MetricsCatalogTests {
    let type = [("process_type", "order-fulfillment")]

    @Test("metrics count starts, completions and failures with durations and the active gauge")
    func metrics() async throws {
        let world = EmbeddedWorld()
        for id in ["m1", "m2", "m3"] { try await world.advance(id, .orderPlaced) }
        #expect(world.metrics.counter(ProcessMetrics.Name.started, type) == 3)
        #expect(world.metrics.gauge(ProcessMetrics.Name.active, type) == 3)

        world.clock.advance(by: .seconds(90))
        for trigger: ProcessTrigger in [.paymentConfirmed(paymentID: "p"), .inventoryReserved(reservationID: "r"), .shipped(trackingNumber: "t"), .delivered] {
            try await world.advance("m1", trigger)
        }
        // A redelivered completion is a duplicate and counts nothing.
        let key = try IdempotencyKey("dup")
        _ = try await world.runtime.execute(try AdvanceOrderProcess(orderID: "m2", trigger: .failed(reason: "declined"), at: world.clock.now), options: ExecutionOptions(idempotencyKey: key))
        _ = try await world.runtime.execute(try AdvanceOrderProcess(orderID: "m2", trigger: .failed(reason: "declined"), at: world.clock.now), options: ExecutionOptions(idempotencyKey: key))

        #expect(world.metrics.counter(ProcessMetrics.Name.completed, type) == 1)
        #expect(world.metrics.counter(ProcessMetrics.Name.failed, type) == 1)
        #expect(world.metrics.gauge(ProcessMetrics.Name.active, type) == 1)
        #expect(world.metrics.timer(ProcessMetrics.Name.duration, type) == [90_000_000_000, 90_000_000_000])
        #expect(world.metrics.labels == [
            "eventcore_processes_started_total", "eventcore_processes_completed_total", "eventcore_processes_failed_total",
            "eventcore_process_duration_seconds", "eventcore_active_processes",
        ])

        // Failures by timeout count too.
        world.clock.advance(days: 8)
        try await world.scheduler.fireDueTimeouts()
        #expect(world.metrics.counter(ProcessMetrics.Name.failed, type) == 2)
        #expect(world.metrics.gauge(ProcessMetrics.Name.active, type) == 0)

        // The gauge can be set from the catalog's count, the fleet-wide truth.
        let counts = try await ProcessCatalog(store: world.store).activeCounts()
        ProcessMetrics(factory: world.metrics).setActiveProcesses(counts["order-fulfillment"] ?? 0, processType: "order-fulfillment")
        #expect(world.metrics.gauge(ProcessMetrics.Name.active, type) == 0)
    }

    @Test("sagas are processes too: started and ended sagas are counted")
    func sagaMetrics() async throws {
        let metrics = CapturingMetricsFactory()
        let world = TravelWorld(metrics: ProcessMetrics(factory: metrics))
        try await world.stock(car: 0)
        _ = try await world.runner.run(TravelWorld.saga("t1"))
        try await world.stock()
        _ = try await world.runner.run(TravelWorld.saga("t2"))
        let saga = [("process_type", "travel-booking")]
        #expect(metrics.counter(ProcessMetrics.Name.started, saga) == 2)
        #expect(metrics.counter(ProcessMetrics.Name.failed, saga) == 1)
        #expect(metrics.counter(ProcessMetrics.Name.completed, saga) == 1)
        #expect(metrics.gauge(ProcessMetrics.Name.active, saga) == 0)
    }

    @Test("the catalog lists processes by state and shows one process's history", arguments: StoreKind.allCases)
    func catalog(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let world = EmbeddedWorld(store: store)
            for id in ["k1", "k2", "k3", "k4"] { try await world.advance(id, .orderPlaced) }
            for trigger: ProcessTrigger in [.paymentConfirmed(paymentID: "p"), .inventoryReserved(reservationID: "r"), .shipped(trackingNumber: "t"), .delivered] {
                try await world.advance("k1", trigger)
            }
            try await world.advance("k2", .failed(reason: "payment failed: declined"))
            let catalog = ProcessCatalog(store: store, pageSize: 3)
            #expect(try await catalog.processes().map(\.businessID) == ["k1", "k2", "k3", "k4"])
            #expect(try await catalog.processes(status: .completed).map(\.businessID) == ["k1"])
            #expect(try await catalog.processes(status: .failed).map(\.status) == [.failed(reason: "payment failed: declined")])
            let running = try await catalog.processes(status: .running)
            #expect(running.map(\.businessID) == ["k3", "k4"])
            #expect(running.allSatisfy { $0.pendingTimeout != nil && $0.processType == "order-fulfillment" })
            #expect(try await catalog.processes(processType: "travel-booking").isEmpty)
            #expect(try await catalog.activeCounts() == ["order-fulfillment": 2])

            let history = try await catalog.history(of: try OrderFulfillmentProcess.processID(orderID: "k2"))
            #expect(history.map(\.eventType) == ["ProcessStarted", "TimeoutScheduled", "TimeoutCancelled", "ProcessFailed"])
            #expect(history.map(\.version) == [1, 2, 3, 4])
            #expect(history.last?.payload.contains("payment failed: declined") == true)
        }
    }
}
