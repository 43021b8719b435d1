import AMQP
import EventCore
import EventCoreTestKit
import Fleet
import FleetSimulation
import FleetTestSupport
import Foundation
import Logging
import Processes
import Testing

/// Timeouts and retries wait on the delay levels to arrive shortly before their due time, then in the worker
/// until they are due: never handled early, and not a second late for the levels' whole-second granularity.
@Suite("Due times: the delay levels and the worker's hold")
struct DueTimeTests {
    static let levels = DelayLevels(levels: 21, destinations: ["fleet.timeouts"])

    @Test func aRoutedDelayEndsBeforeTheDueTimeByItsLeadAndHops() {
        let timing = DelayTiming()
        var random = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let remaining = timing.holdWindow + Double(random.next() % 5_000_000) / 1000 * (random.next() % 2 == 0 ? 1 : 100)
            let hopCost = Double(random.next() % 2000) / 1000
            let seconds = timing.routedSeconds(remaining: remaining, maximum: Self.levels.maximumDelaySeconds, hopCost: hopCost)
            let lead = timing.lead(hops: Self.levels.hops(delaySeconds: seconds), hopCost: hopCost)
            // If every hop cost what the timing expects (at least `leadPerHop`), the message arrives by its due
            // time, `lead` early...
            #expect(Double(seconds) + lead <= remaining, "remaining \(remaining): routed \(seconds) s")
            #expect(lead >= timing.lead && lead <= timing.holdWindow - 1)
            // ... and if hops cost nothing, not so early that it cannot be held.
            #expect(remaining - Double(seconds) <= timing.holdWindow, "remaining \(remaining): routed \(seconds) s")
        }
    }

    @Test func aMessageDueWithinTheHoldWindowGoesStraightToItsDestination() {
        let timing = DelayTiming()
        #expect(timing.routedSeconds(remaining: 0.2, maximum: 100) == 0)
        #expect(timing.routedSeconds(remaining: timing.holdWindow, maximum: 100) == 0)
        #expect(Self.levels.address(delaySeconds: 0, destination: "fleet.timeouts").exchange == Self.levels.deliveryExchange)
        // Sent back after arriving too early, or finding the hold full: it waits at least a second, never 0.
        #expect(timing.routedSeconds(remaining: 0.2, maximum: 100, atLeastOneSecond: true) == 1)
        #expect(timing.routedSeconds(remaining: 3.4, maximum: 100, atLeastOneSecond: true) == 4)
        #expect(timing.routedSeconds(remaining: -3, maximum: 100, atLeastOneSecond: true) == 1)
        // Never beyond the levels.
        #expect(timing.routedSeconds(remaining: 1e9, maximum: 1023) == 1023)
        // 600.3 s ahead: 598 s would be the longest delay that ends a lead before the due time (5 levels);
        // 592 s (3 levels) ends 8.3 s before it, within the hold window.
        #expect(timing.routedSeconds(remaining: 600.3, maximum: Self.levels.maximumDelaySeconds) == 592)
    }

    @Test func theHopCostFollowsDearHopsFastAndCheapOnesSlowlyAndIgnoresForgeries() {
        let cost = HopCost(initial: 0.25)
        let sent = Date(timeIntervalSince1970: 1_800_000_000)
        // 13 s over 3 hops for a 10 s delay: a second a hop; the estimate rises a fifth of the way at once.
        cost.observe(delayedAt: sent, delaySeconds: 10, hops: 3, now: sent.addingTimeInterval(13))
        #expect(abs(cost.seconds - 0.4) < 1e-9)
        for _ in 0..<40 { cost.observe(delayedAt: sent, delaySeconds: 10, hops: 3, now: sent.addingTimeInterval(13)) }
        #expect(cost.seconds > 0.99 && cost.seconds <= 1)
        // Cheap hops bring it down a fiftieth of the way each.
        cost.observe(delayedAt: sent, delaySeconds: 10, hops: 3, now: sent.addingTimeInterval(10))
        #expect(cost.seconds > 0.97)
        // A forged send time a year back counts as 5 s a hop at most; one in the future as nothing.
        cost.observe(delayedAt: sent.addingTimeInterval(-31_536_000), delaySeconds: 1, hops: 1, now: sent)
        #expect(cost.seconds <= 0.98 + 0.2 * 5)
        let levels = DelayLevels(levels: 4, prefix: "d", deliveryExchange: "d.deliver", destinations: ["q.a"])
        #expect(levels.delaySeconds(routingKey: "0.1.0.1.q.a") == 5)
        #expect(levels.delaySeconds(routingKey: "1.1.1.1.q.a") == 15)
        #expect(levels.delaySeconds(routingKey: "0.1.2.1.q.a") == nil)
        #expect(levels.delaySeconds(routingKey: "order.placed") == nil)
        #expect(levels.delaySeconds(routingKey: "0.1") == nil)
    }

    @Test func anArrivalIsHandledHeldOrSentBack() {
        let timing = DelayTiming(holdWindow: 5)
        #expect(timing.arrival(remaining: -0.5) == .due)
        #expect(timing.arrival(remaining: 0) == .due)
        #expect(timing.arrival(remaining: 1.25) == .hold(1.25))
        #expect(timing.arrival(remaining: 5) == .hold(5))
        #expect(timing.arrival(remaining: 5.01) == .tooEarly)
    }

    @Test func aDelayEntersAtTheLevelOfItsHighestBit() {
        let levels = DelayLevels(levels: 4, prefix: "d", deliveryExchange: "d.deliver", destinations: ["q.a"])
        #expect(levels.entryExchange(delaySeconds: 0) == "d.deliver")
        #expect(levels.entryExchange(delaySeconds: 1) == "d.level-0")
        #expect(levels.entryExchange(delaySeconds: 5) == "d.level-2")
        #expect(levels.entryExchange(delaySeconds: 8) == "d.level-3")
        #expect(levels.entryExchange(delaySeconds: 99) == "d.level-3")
        #expect(levels.hops(delaySeconds: 5) == 2 && levels.hops(delaySeconds: 15) == 4 && levels.hops(delaySeconds: 99) == 4)
        let (exchange, key) = levels.address(delaySeconds: 5, destination: "q.a")
        #expect(exchange == "d.level-2" && key == "0.1.0.1.q.a")
    }

    /// Runs `body` with one worker (named after `name`, with `arguments` and `environment` on top of the test
    /// fleet's) on a fresh SQLite store, consuming from a vhost of its own; `body` gets the store's path, the
    /// worker, its HTTP port and a broker connection, which is closed afterwards.
    private func withWorker(
        _ name: String, arguments: [String] = [], environment: [String: String] = [:],
        _ body: (_ path: String, _ worker: Process, _ port: Int, _ connection: AMQPConnection) async throws -> Void
    ) async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-\(name)-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        try await FleetEndToEndTests.Fleet.with(storeURL: path) { fleet in
            let port = TestPorts.free()
            let worker = try fleet.startWorker(extraArguments: ["--http-port", String(port)] + arguments, environment: environment)
            let connection = try await AMQPConnection.connect(url: fleet.amqpURL)
            try await fleet.waitUntilConsuming(1, topology: topology, connection: connection)
            try await body(path, worker, port, connection)
            await connection.close()
        }
    }

    /// A real worker and broker: an order due in 2 s is held and handled at its due time; one due in 14 s (too
    /// early to hold) is sent back to the levels once, then held; neither is handled before it is due; one with
    /// no due time is handled at once.
    @Test(.timeLimit(.minutes(3)))
    func aWorkerHandlesMessagesAtTheirDueTimeNeverBefore() async throws {
        try await withWorker("due") { path, worker, port, connection in
            let publisher = try await connection.makePublisher()
            let now = Date()
            let dues: [String: Date?] = ["due-soon": now.addingTimeInterval(2), "due-later": now.addingTimeInterval(14), "due-now": nil]
            let messages = dues.map { order, due in
                let message = HostileCorpus.orderPlaced(order, id: order, headers: due.map {
                    [Envelope.Header.dueAt: .int64(Int64(($0.timeIntervalSince1970 * 1000).rounded(.up)))]
                })
                return AMQPMessage(body: message.body, exchange: message.exchange, routingKey: message.routingKey, properties: message.properties)
            }
            for result in await publisher.publish(contentsOf: messages) { try result.get() }

            let store = try await StoreConnection.open(path, maximumPayloadBytes: 1 << 20, logger: Logger(label: "due-time-test"))
            var firstRecorded: [String: Date] = [:]
            let handled = try await TestBroker.eventually(90) {
                for event in try await OperationsReplayTests.allEvents(store.store) {
                    if let order = event.metadata.correlationID, dues.keys.contains(order), firstRecorded[order] == nil {
                        firstRecorded[order] = event.recordedAt
                    }
                }
                return firstRecorded.count == dues.count
            }
            try #require(handled, "handled: \(firstRecorded.keys.sorted())")
            for (order, due) in dues {
                guard let due, let recorded = firstRecorded[order] else { continue }
                #expect(recorded >= due.addingTimeInterval(-0.001), "\(order) was handled \(due.timeIntervalSince(recorded)) s before its due time")
            }
            #expect(firstRecorded["due-now"]! < firstRecorded["due-soon"]!)
            let (status, metrics) = try #require(await ChaosTests.get(port: port, path: "/metrics"))
            #expect(status == 200)
            #expect(ChaosTests.metric("fleet_messages_redelayed_total", in: metrics) == 1, "only the order due in 14 s is sent back, once")
            #expect(ChaosTests.metric("fleet_messages_held", in: metrics) == 0, "nothing is held any more")
            #expect(worker.isRunning)
            await store.close()
        }
    }

    /// A real worker and broker: the timeout of a step that was done before it fell due is acknowledged without
    /// being fired (the worker's stream cache shows it superseded), while the timeout of the step left waiting
    /// fires at its due time and schedules a retry.
    @Test(.timeLimit(.minutes(3)))
    func aTimeoutWhoseStepIsDoneIsDroppedWithoutFiring() async throws {
        try await withWorker("obsolete", arguments: ["--order-step-timeout", "4"]) { path, worker, port, connection in
            let publisher = try await connection.makePublisher()
            let placed = HostileCorpus.orderPlaced("o-obsolete", id: "placed-1")
            let paid = HostileCorpus.order("payment", HostileCorpus.json(["order_id": "o-obsolete", "payment_id": "p-1"]), id: "paid-1",
                                           correlation: "o-obsolete", reason: nil)
            // The payment arrives once the process has started (and its first timeout is on its way), so that the
            // worker's cache shows the payment step's timeout superseded when it falls due; the inventory step's
            // timeout is pending, and fires about 4 s later.
            let store = try await StoreConnection.open(path, maximumPayloadBytes: 1 << 20, logger: Logger(label: "obsolete-test"))
            let process = try StreamID("order-fulfillment-o-obsolete")
            for message in [placed, paid] {
                let sent = await publisher.publish(contentsOf: [AMQPMessage(body: message.body, exchange: message.exchange,
                                                                            routingKey: message.routingKey, properties: message.properties)])
                for result in sent { try result.get() }
                _ = try await TestBroker.eventually(10) { !(try await store.store.read(stream: process).events.isEmpty) }
            }
            var lifecycle: [ProcessLifecycleEvent] = []
            let retried = try await TestBroker.eventually(60) {
                lifecycle = try await store.store.read(stream: process).events
                    .compactMap { try EventCodec().decode($0, as: ProcessLifecycleEvent.self) }
                return lifecycle.contains { if case .retryScheduled = $0 { true } else { false } }
            }
            try #require(retried, "events: \(lifecycle)")
            let timeouts = lifecycle.compactMap { if case .timeoutScheduled(let timeout) = $0 { timeout.timeoutID } else { nil } }
            let fired = lifecycle.compactMap { if case .retryScheduled(let retry) = $0 { retry.firedTimeoutID } else { nil } }
            let scheduled = timeouts.count
            #expect(timeouts.count >= 2 && !fired.contains(timeouts[0]), "the payment step's timeout never fired: \(lifecycle)")
            #expect(fired.first == timeouts[1], "the inventory step's timeout fired: \(lifecycle)")
            let metricsSettled = try await TestBroker.eventually(30) {
                guard let (_, metrics) = await ChaosTests.get(port: port, path: "/metrics") else { return false }
                return ChaosTests.metric("fleet_messages_obsolete_total", in: metrics) >= 1
                    && ChaosTests.metric("fleet_timeouts_arrived_total", in: metrics) >= 2
            }
            let shown = await ChaosTests.get(port: port, path: "/metrics")?.1.split(separator: "\n").filter { $0.contains("timeout") || $0.contains("obsolete") }.joined(separator: "\n") ?? ""
            #expect(metricsSettled, "the superseded timeout is counted as obsolete, and with the fired one as arrived: \(shown)")
            if let (_, metrics) = await ChaosTests.get(port: port, path: "/metrics") {
                let arrived = ChaosTests.metric("fleet_timeouts_arrived_total", in: metrics)
                #expect(arrived >= ChaosTests.metric("fleet_messages_obsolete_total", in: metrics) + 1 && arrived <= Double(scheduled))
            }
            #expect(worker.isRunning)
            await store.close()
        }
    }

    /// A real worker: idle for `FLEET_IDLE_RELEASE_SECONDS`, it gives its stream cache back, once, and again only
    /// after another message.
    @Test(.timeLimit(.minutes(3)))
    func anIdleWorkerGivesItsMemoryBackOncePerIdleSpell() async throws {
        try await withWorker("idle", environment: ["FLEET_IDLE_RELEASE_SECONDS": "1"]) { path, worker, port, connection in
            let publisher = try await connection.makePublisher()
            func metrics() async -> (releases: Double, cached: Double, consumed: Double) {
                let text = await ChaosTests.get(port: port, path: "/metrics")?.1 ?? ""
                return (ChaosTests.metric("fleet_idle_releases_total", in: text), ChaosTests.metric("eventcore_stream_cache_streams", in: text),
                        ChaosTests.metric("fleet_messages_consumed_total", in: text))
            }
            for order in ["idle-1", "idle-2"] {
                let before = await metrics().releases
                let message = HostileCorpus.orderPlaced(order, id: order)
                for result in await publisher.publish(contentsOf: [AMQPMessage(body: message.body, exchange: message.exchange,
                                                                                routingKey: message.routingKey, properties: message.properties)]) {
                    try result.get()
                }
                var seen = await metrics()
                let held = try await TestBroker.eventually(20) {
                    seen = await metrics()
                    return seen.consumed >= 1 && seen.cached >= 1
                }
                #expect(held, "the worker keeps the process it advanced: \(seen)")
                let released = try await TestBroker.eventually(20) {
                    seen = await metrics()
                    return seen.releases == before + 1 && seen.cached == 0
                }
                #expect(released, "one release after the message, and the cache is empty: \(seen)")
                try await Task.sleep(for: .seconds(3))
                #expect(await metrics().releases == before + 1, "idle on, nothing more to give back")
            }
            #expect(worker.isRunning)
        }
    }
}
