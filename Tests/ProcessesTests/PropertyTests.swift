import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Testing

extension SplitMix64 {
    mutating func chance(_ probability: Double) -> Bool { nextUnit() < probability }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

@Suite("Properties over random event orders and crash points")
struct PropertyTests {
    /// One order's messages: the four facts (some missing), maybe a failure, some duplicated, shuffled.
    static func messages(_ random: inout SplitMix64, orderID: String) -> [(id: String, event: any OrderSystemEventPayload)] {
        var events: [any OrderSystemEventPayload] = [OrderPlaced(orderID: orderID)]
        if random.chance(0.9) { events.append(PaymentConfirmed(orderID: orderID, paymentID: "p")) }
        if random.chance(0.9) { events.append(InventoryReserved(orderID: orderID, reservationID: "r")) }
        if random.chance(0.9) { events.append(ShipmentDispatched(orderID: orderID, trackingNumber: "t")) }
        if random.chance(0.9) { events.append(ShipmentDelivered(orderID: orderID)) }
        if random.chance(0.2) { events.append(PaymentFailed(orderID: orderID, reason: "declined")) }
        if random.chance(0.1) { events.append(CustomerNotified(orderID: orderID, channel: "email")) }
        var messages = events.enumerated().map { (id: "\(orderID)-m\($0.offset)", event: $0.element) }
        for message in messages where random.chance(0.3) { messages.append(message) }
        messages.shuffle(using: &random)
        return messages
    }

    /// What the process must end as, from the order the messages were first handled in.
    static func expectedOutcome(_ messages: [(id: String, event: any OrderSystemEventPayload)]) -> ProcessStatus {
        var seen: Set<String> = []
        var facts: Set<String> = []
        for message in messages where seen.insert(message.id).inserted {
            switch message.event {
            case is PaymentFailed: return .failed(reason: "payment failed: declined")
            case is OrderPlaced, is CustomerNotified: continue
            default: facts.insert(message.event.eventType)
            }
            if facts.count == 4 { return .completed }
        }
        return .failed(reason: "the process made no progress after 3 retries")
    }

    @Test("every order process ends Completed or Failed, as its events decide, whatever the order and the crashes", arguments: 0..<8)
    func orderProcesses(_ batch: Int) async throws {
        var outcomes: Set<String> = []
        for seed in UInt64(batch * 40)..<UInt64(batch * 40 + 40) {
            var random = SplitMix64(seed: seed)
            let base = InMemoryEventStore()
            // Crashes before and after commits (the worker dies before acking) and conflicts, all redelivered.
            let store = FaultInjectingEventStore(
                wrapping: base, seed: seed,
                rates: .init(unavailableBeforeAppend: 0.1, unavailableAfterAppend: 0.15, conflict: 0.05, readFailure: 0.05)
            )
            let world = EmbeddedWorld(store: store)
            let router = OrderFulfillmentRouter(consumer: "prop")
            let orderID = "o\(seed)"
            let messages = Self.messages(&random, orderID: orderID)
            for message in messages {
                world.clock.advance(by: .seconds(Int(random.below(7200))))
                let incoming = IncomingEvent(eventType: message.event.eventType, payload: try message.event.encodedPayload(), messageID: message.id, receivedAt: world.clock.now)
                guard let routed = try router.route(incoming) else { continue }
                var delivered = false
                for _ in 0..<50 where !delivered {
                    delivered = (try? await world.runtime.execute(routed)) != nil
                }
                #expect(delivered, "seed \(seed): a message was never handled")
            }
            // Time passes until nothing is pending; timeouts fire through the same faulty store.
            for _ in 0..<60 {
                world.clock.advance(by: .seconds(6 * 3600))
                _ = try? await world.scheduler.fireDueTimeouts()
                if (try? await world.scheduler.pending().isEmpty) == true, let status = try? await world.status(orderID), status != .running { break }
            }
            let events = try await base.read(stream: try OrderFulfillmentProcess.processID(orderID: orderID)).events
            let snapshot = try OrderFulfillmentProcess().fold(events, processID: try OrderFulfillmentProcess.processID(orderID: orderID))
            #expect(snapshot.status == Self.expectedOutcome(messages), "seed \(seed)")
            outcomes.insert(snapshot.status == .completed ? "completed" : "failed")
            // Exactly one ending, last; one start, first; steps in order without repeats.
            let types = events.map(\.eventType)
            #expect(types.first == "ProcessStarted" && types.filter { $0 == "ProcessStarted" }.count == 1, "seed \(seed)")
            #expect(types.filter { $0 == "ProcessCompleted" || $0 == "ProcessFailed" }.count == 1, "seed \(seed)")
            #expect(["ProcessCompleted", "ProcessFailed"].contains(types.last ?? ""), "seed \(seed)")
            let codec = EventCodec()
            let steps = try events.compactMap { stored -> FulfillmentStep? in
                if case .domain(.stepCompleted(let step))? = try codec.decode(stored, as: ProcessEvent<OrderProcessEvent>.self) { return step }
                return nil
            }
            #expect(steps == Array([FulfillmentStep.paymentConfirmed, .inventoryReserved, .shipped, .delivered].prefix(steps.count)), "seed \(seed)")
        }
        // Each batch of seeds reaches both endings.
        #expect(outcomes == ["completed", "failed"])
    }

    @Test("every saga ends completed, fully compensated, or needing attention where a compensation cannot succeed", arguments: 0..<5)
    func sagas(_ batch: Int) async throws {
        let resources: [(TravelResourceKind, String)] = [(.hotel, "grand"), (.flight, "LH400"), (.car, "fra")]
        var phases: Set<SagaPhase> = []
        for seed in UInt64(batch * 40)..<UInt64(batch * 40 + 40) {
            var random = SplitMix64(seed: seed &+ 1_000)
            let base = InMemoryEventStore()
            let setup = TravelWorld(store: base)
            let available = (0..<3).map { _ in random.chance(0.8) }
            let closed = (0..<3).map { _ in random.chance(0.25) }
            try await setup.stock(hotel: available[0] ? 1 : 0, flight: available[1] ? 1 : 0, car: available[2] ? 1 : 0)
            // A closed resource still sells, but refuses cancellations: its compensation cannot succeed.
            for (index, resource) in resources.enumerated() where closed[index] {
                try await setup.closeCancellations(resource.0, resource.1)
            }

            let store = FaultInjectingEventStore(
                wrapping: base, seed: seed,
                rates: .init(unavailableBeforeAppend: 0.08, unavailableAfterAppend: 0.12, conflict: 0.05, readFailure: 0.05)
            )
            let world = TravelWorld(store: store)
            let saga = TravelWorld.saga("trip-1", maxRetries: 8)
            var report: SagaReport?
            var runs = 0
            while runs < 200 {
                runs += 1
                do {
                    let state = try await world.runner.state(of: try TravelBookingSaga.sagaID(for: "trip-1"))
                    let result = state.lifecycle.status == .notStarted
                        ? try await world.runner.run(saga)
                        : try await world.runner.resume(TravelBookingSaga.self, businessID: "trip-1")
                    if [.completed, .compensated, .needsAttention].contains(result.phase) {
                        report = result
                        break
                    }
                } catch {
                    continue
                }
            }
            let final = try #require(report, "seed \(seed): the saga never settled")
            let failing = available.firstIndex(of: false)
            let stuckAt = failing.flatMap { failed in (0..<failed).last { closed[$0] } }
            let expected: SagaPhase = failing == nil ? .completed : (stuckAt == nil ? .compensated : .needsAttention)
            #expect(final.phase == expected, "seed \(seed)")
            phases.insert(final.phase)
            let bookings = try await setup.activeBookings()
            switch final.phase {
            case .completed:
                #expect(failing == nil, "seed \(seed)")
                #expect(bookings == ["trip-1-hotel", "trip-1-flight", "trip-1-car"], "seed \(seed)")
            case .compensated:
                let failed = try #require(failing, "seed \(seed)")
                #expect(bookings.isEmpty, "seed \(seed)")
                #expect(final.state.compensatedSteps == Array(TravelBookingSaga.stepNames.prefix(failed).reversed()), "seed \(seed)")
            case .needsAttention:
                let failed = try #require(failing, "seed \(seed)")
                let stuck = try #require(final.state.attention?.index, "seed \(seed)")
                // Only a closed resource can be stuck, and it is the newest closed one before the failing step.
                #expect(stuck == stuckAt && stuck < failed, "seed \(seed)")
                // Steps after it were compensated; it and the ones before it keep their bookings.
                let expectedBookings = ["trip-1-hotel", "trip-1-flight", "trip-1-car"].prefix(stuck + 1)
                #expect(bookings == Array(expectedBookings), "seed \(seed)")
            default:
                Issue.record("seed \(seed): unexpected phase \(final.phase)")
            }
            // No resource was booked twice, whatever crashed.
            for (kind, id) in resources {
                let booked = try await base.read(stream: try kind.stream(id)).events.filter { $0.eventType == "TravelBooked" }
                #expect(booked.count <= 1, "seed \(seed)")
            }
        }
        #expect(phases == [.completed, .compensated, .needsAttention])
    }
}
