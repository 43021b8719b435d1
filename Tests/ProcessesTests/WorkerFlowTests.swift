import EventCore
import EventCoreTestKit
import Foundation
import OrderFulfillment
import Processes
import Testing

@Suite("From message to command, as a worker calls it")
struct WorkerFlowTests {
    let router = OrderFulfillmentRouter(consumer: "order-worker")
    let clock = ManualClock()

    func message(_ event: some OrderSystemEventPayload, id: String) throws -> IncomingEvent {
        IncomingEvent(eventType: event.eventType, payload: try event.encodedPayload(), messageID: id, receivedAt: clock.now,
                      metadata: EventMetadata(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
    }

    @Test("each system event maps to its trigger; others are ignored")
    func mapping() throws {
        let handler = OrderFulfillmentHandler()
        let cases: [(OrderSystemEvent, ProcessTrigger?)] = [
            (.orderPlaced(OrderPlaced(orderID: "1", totalCents: 500)), .orderPlaced),
            (.paymentConfirmed(PaymentConfirmed(orderID: "1", paymentID: "p")), .paymentConfirmed(paymentID: "p")),
            (.paymentFailed(PaymentFailed(orderID: "1", reason: "declined")), .failed(reason: "payment failed: declined")),
            (.inventoryReserved(InventoryReserved(orderID: "1", reservationID: "r")), .inventoryReserved(reservationID: "r")),
            (.inventoryUnavailable(InventoryUnavailable(orderID: "1", sku: "sku-9")), .failed(reason: "inventory unavailable for sku-9")),
            (.shipmentDispatched(ShipmentDispatched(orderID: "1", trackingNumber: "T")), .shipped(trackingNumber: "T")),
            (.shipmentDelivered(ShipmentDelivered(orderID: "1")), .delivered),
            (.shipmentFailed(ShipmentFailed(orderID: "1", reason: "lost")), .failed(reason: "shipment failed: lost")),
            (.customerNotified(CustomerNotified(orderID: "1", channel: "email")), nil),
        ]
        for (event, trigger) in cases {
            #expect(handler.trigger(for: event) == trigger)
            let command = try handler.command(for: event, at: clock.now)
            #expect(command?.trigger == trigger)
            #expect(command.map { $0.processID.rawValue } == (trigger == nil ? nil : "order-fulfillment-1"))
        }
        #expect(OrderSystemEvent.typeNames.count == cases.count)
    }

    @Test("decode, route, execute, schedule: one call each, with the idempotency key and metadata")
    func flow() async throws {
        let store = InMemoryEventStore()
        let runtime = ProcessRuntime(executor: CommandExecutor(store: store, clock: ImmediateClock()))
        let routed = try #require(try router.route(try message(OrderPlaced(orderID: "o-9"), id: "m-1")))
        #expect(routed.options.idempotencyKey == (try IdempotencyKey("order-worker/m-1")))
        #expect(routed.processID.rawValue == "order-fulfillment-o-9")
        let execution = try await runtime.execute(routed)
        #expect(execution.committed)
        #expect(execution.eventsToPublish.map(\.eventType) == ["ProcessStarted", "TimeoutScheduled"])
        #expect(execution.eventsToPublish.allSatisfy { $0.metadata.correlationID == "o-9" && $0.metadata.causationID == "m-1" && $0.metadata.sourceMessageID == "m-1" })
        #expect(execution.eventsToPublish.allSatisfy { $0.metadata.traceparent?.hasPrefix("00-0af7") == true })
        let timeout = try #require(execution.timeoutsToSchedule.first)
        #expect(timeout.dueAt == clock.now.addingTimeInterval(86_400))

        // Redelivery: the same message id is a duplicate that returns the original events and timeouts.
        let again = try await runtime.execute(try #require(try router.route(try message(OrderPlaced(orderID: "o-9"), id: "m-1"))))
        #expect(again.result.outcome == .duplicate)
        #expect(again.eventsToPublish.map(\.id) == execution.eventsToPublish.map(\.id))
        #expect(again.timeoutsToSchedule == execution.timeoutsToSchedule)

        // The timeout message arrives early: not yet due, no key recorded; later the same message fires it.
        let key = try IdempotencyKey(consumer: "timeouts", messageID: timeout.timeoutID)
        let early = try await runtime.fireTimeout(timeout, at: clock.now, options: ExecutionOptions(idempotencyKey: key))
        #expect(early.outcome == .notYetDue(timeout.dueAt))
        #expect(try await store.appendResult(forIdempotencyKey: key) == nil)
        clock.advance(days: 1)
        let fired = try await runtime.fireTimeout(timeout, at: clock.now, options: ExecutionOptions(idempotencyKey: key))
        guard case .retryScheduled(1, let next?) = fired.outcome else {
            Issue.record("expected a first retry, got \(fired.outcome)")
            return
        }
        #expect(fired.execution?.timeoutsToSchedule == [next])
        let redelivered = try await runtime.fireTimeout(timeout, at: clock.now, options: ExecutionOptions(idempotencyKey: key))
        #expect(redelivered.execution?.result.outcome == .duplicate)
        #expect(redelivered.outcome == fired.outcome)
    }

    @Test("a timeout its process has moved past is known from the stream cache alone, and ignoring it reads nothing")
    func settledTimeoutsFromTheCache() async throws {
        let base = InMemoryEventStore()
        let store = FaultInjectingEventStore(wrapping: base)
        let runtime = ProcessRuntime(executor: CommandExecutor(store: store, cache: StreamCache(), clock: ImmediateClock()))
        let started = try await runtime.execute(try #require(try router.route(try message(OrderPlaced(orderID: "o-5"), id: "m-1"))))
        let first = try #require(started.timeoutsToSchedule.first)
        #expect(runtime.settledReasonToIgnore(first) == nil, "the pending timeout must fire")
        #expect(started.committed)

        let paid = try await runtime.execute(try #require(try router.route(try message(PaymentConfirmed(orderID: "o-5", paymentID: "p"), id: "m-2"))))
        let second = try #require(paid.timeoutsToSchedule.first)
        let readsBefore = store.statistics.readsForwarded
        let reason = try #require(runtime.settledReasonToIgnore(first))
        #expect([TimeoutIgnoredReason.cancelled, .superseded].contains(reason))
        #expect(runtime.settledReasonToIgnore(second) == nil)

        // Fired anyway (a worker without the check, or a redelivery): ignored for the same reason, from the
        // decision itself rather than a second read of the process.
        clock.advance(days: 1)
        let fired = try await runtime.fireTimeout(first, at: clock.now, options: ExecutionOptions(idempotencyKey: try IdempotencyKey(consumer: "timeouts", messageID: first.timeoutID)))
        #expect(fired.outcome == .ignored(reason))
        #expect(store.statistics.readsForwarded == readsBefore, "neither the check nor the ignored firing reads the store")

        // A worker that never saw the process, or saw only its start, cannot tell: its timeouts take the full path.
        let stranger = ProcessRuntime(executor: CommandExecutor(store: base, cache: StreamCache(), clock: ImmediateClock()))
        #expect(stranger.settledReasonToIgnore(first) == nil)
        let behind = ProcessRuntime(executor: CommandExecutor(store: base, cache: StreamCache(), clock: ImmediateClock()))
        let sixStarted = try await behind.execute(try #require(try router.route(try message(OrderPlaced(orderID: "o-6"), id: "m-3"))))
        let sixFirst = try #require(sixStarted.timeoutsToSchedule.first)
        let other = ProcessRuntime(executor: CommandExecutor(store: base, clock: ImmediateClock()))
        #expect(try await other.execute(try #require(try router.route(try message(PaymentConfirmed(orderID: "o-6", paymentID: "p"), id: "m-4")))).committed)
        #expect(behind.settledReasonToIgnore(sixFirst) == nil, "a cache behind the store shows the timeout pending: it is not skipped")
        #expect(ProcessRuntime(executor: CommandExecutor(store: base)).settledReasonToIgnore(first) == nil, "no cache, no answer")
    }

    @Test("an unknown type and a bad payload are routing errors; an ignored event routes to nothing")
    func errors() throws {
        let unknown = IncomingEvent(eventType: "PriceChanged", payload: Data("{}".utf8), messageID: "m", receivedAt: clock.now)
        #expect(throws: RoutingError(.unknownEventType, eventType: "PriceChanged", #"unknown event type "PriceChanged""#)) { try router.route(unknown) }

        let payloads = [#"{"payment_id":"p"}"#, #"{"order_id":7,"payment_id":"p"}"#, "not json", #"{"order_id":"","payment_id":"p"}"#, #"{"order_id":"a\u0007b","payment_id":"p"}"#]
        for payload in payloads {
            let event = IncomingEvent(eventType: "PaymentConfirmed", payload: Data(payload.utf8), messageID: "m", receivedAt: clock.now)
            do {
                _ = try router.route(event)
                Issue.record("\(payload) was accepted")
            } catch {
                #expect(error.code == .invalidPayload)
                #expect(!error.message.contains("\"p\""), "the error must not quote the payload")
            }
        }
        #expect(try router.route(try message(CustomerNotified(orderID: "o", channel: "sms"), id: "m")) == nil)
        #expect(router.eventTypes.contains("ShipmentDelivered"))
    }

    @Test("system event payloads are flat, snake_case JSON with the order id")
    func payloads() throws {
        let json = String(decoding: try ShipmentDispatched(orderID: "o-1", trackingNumber: "T-9").encodedPayload(), as: UTF8.self)
        #expect(json == #"{"order_id":"o-1","tracking_number":"T-9"}"#)
        let decoded = try OrderSystemEvent(eventType: "ShipmentDispatched", payload: Data(json.utf8))
        #expect(decoded == .shipmentDispatched(ShipmentDispatched(orderID: "o-1", trackingNumber: "T-9")))
    }

    @Test("process events are stored under their type name with their own fields")
    func processEventPayloads() throws {
        let codec = EventCodec()
        let event = ProcessEvent<OrderProcessEvent>.domain(.shippingInfoUpdated(trackingNumber: "T-1"))
        let encoded = try codec.encode(event)
        #expect(encoded.eventType == "OrderShippingInfoUpdated")
        #expect(String(decoding: encoded.payload, as: UTF8.self) == #"{"OrderShippingInfoUpdated":{"tracking_number":"T-1"}}"#)
        let stored = StoredEvent(id: EventID(), streamID: try StreamID("s"), streamVersion: 1, globalPosition: 1, eventType: encoded.eventType,
                                 payload: encoded.payload, metadata: EventMetadata(), recordedAt: Date())
        #expect(try codec.decode(stored, as: ProcessEvent<OrderProcessEvent>.self) == event)
        // The lifecycle vocabulary alone skips the order's events and reads its own.
        #expect(try codec.decode(stored, as: ProcessLifecycleEvent.self) == nil)
        let timeout = ProcessLifecycleEvent.timeoutScheduled(TimeoutScheduled(timeoutID: "s@2", dueAt: Date(timeIntervalSince1970: 0), attempt: 1))
        let timeoutStored = try codec.encode(ProcessEvent<OrderProcessEvent>.lifecycle(timeout))
        #expect(String(decoding: timeoutStored.payload, as: UTF8.self) == #"{"TimeoutScheduled":{"attempt":1,"dueAt":"1970-01-01T00:00:00Z","timeoutID":"s@2"}}"#)
    }
}
