import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Testing

@Suite("Concurrent triggers for one process")
struct ConcurrencyTests {
    /// Executes triggers for one order at the same time, each as its own worker would.
    static func deliverConcurrently(_ triggers: [ProcessTrigger], orderID: String, executor: CommandExecutor, at now: Date) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for trigger in triggers {
                group.addTask {
                    _ = try await executor.execute(try AdvanceOrderProcess(orderID: orderID, trigger: trigger, at: now))
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("two triggers at once are serialised by the store: no step is lost", arguments: StoreKind.allCases)
    func twoTriggers(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let executor = CommandExecutor(store: store, clock: ImmediateClock())
            let now = ManualClock().now
            for index in 0..<8 {
                let orderID = "c-\(index)"
                _ = try await executor.execute(try AdvanceOrderProcess(orderID: orderID, trigger: .orderPlaced, at: now))
                try await Self.deliverConcurrently(
                    [.paymentConfirmed(paymentID: "p-\(index)"), .inventoryReserved(reservationID: "r-\(index)")],
                    orderID: orderID, executor: executor, at: now
                )
                let process = try await OrderFulfillmentProcess().snapshot(businessID: orderID, in: store)
                #expect(process.currentStep == .inventoryReserved, "\(kind) order \(index)")
                #expect(process.state.paymentID == "p-\(index)")
                #expect(process.state.reservationID == "r-\(index)")
                let types = try await store.read(stream: process.processID).events.map(\.eventType)
                #expect(types.filter { $0 == OrderProcessEvent.TypeName.stepCompleted }.count == 2)
                #expect(types.filter { $0 == "TimeoutScheduled" }.count - types.filter { $0 == "TimeoutCancelled" }.count == 1)
            }
        }
    }

    @Test("every fact at once completes the process exactly once", arguments: StoreKind.allCases)
    func allAtOnce(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let executor = CommandExecutor(store: store, clock: ImmediateClock())
            let now = ManualClock().now
            for index in 0..<4 {
                let orderID = "all-\(index)"
                try await Self.deliverConcurrently(
                    [.orderPlaced, .paymentConfirmed(paymentID: "p"), .inventoryReserved(reservationID: "r"), .shipped(trackingNumber: "T"), .delivered],
                    orderID: orderID, executor: executor, at: now
                )
                let processID = try OrderFulfillmentProcess.processID(orderID: orderID)
                let types = try await store.read(stream: processID).events.map(\.eventType)
                #expect(types.first == "ProcessStarted", "\(kind)")
                #expect(types.filter { $0 == "ProcessStarted" }.count == 1)
                #expect(types.filter { $0 == "ProcessCompleted" }.count == 1)
                #expect(types.last == "ProcessCompleted")
                #expect(types.filter { $0 == OrderProcessEvent.TypeName.stepCompleted }.count == 4)
            }
        }
    }

    @Test("the same message on two workers at once has one effect", arguments: StoreKind.allCases)
    func sameMessageTwice(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let runtime = ProcessRuntime(executor: CommandExecutor(store: store, clock: ImmediateClock()))
            let router = OrderFulfillmentRouter(consumer: "workers")
            let payload = try PaymentConfirmed(orderID: "twice", paymentID: "p-1").encodedPayload()
            let message = IncomingEvent(eventType: PaymentConfirmed.typeName, payload: payload, messageID: "m-1", receivedAt: ManualClock().now)
            let outcomes = try await withThrowingTaskGroup(of: CommandResult.Outcome.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        let routed = try #require(try router.route(message))
                        return try await runtime.execute(routed).result.outcome
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.sorted { "\($0)" < "\($1)" } == [.committed, .duplicate], "\(kind)")
            let processID = try OrderFulfillmentProcess.processID(orderID: "twice")
            let types = try await store.read(stream: processID).events.map(\.eventType)
            #expect(types.filter { $0 == OrderProcessEvent.TypeName.paymentRecorded }.count == 1)
            #expect(types.filter { $0 == "ProcessStarted" }.count == 1)
        }
    }
}

extension OrderSystemEventPayload {
    /// The JSON payload another service would publish.
    func encodedPayload() throws -> Data { try EventCodec().encode(self).payload }
}
