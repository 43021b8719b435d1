import EventCore
import Foundation
import Processes

/// Maps system events to the order process: each event that moves an order becomes an
/// ``AdvanceOrderProcess`` with its ``ProcessTrigger``; the rest are ignored.
public struct OrderFulfillmentHandler: Sendable {
    /// The process manager the commands run (its timeout policy).
    public var process: OrderFulfillmentProcess

    /// Creates the handler.
    public init(process: OrderFulfillmentProcess = OrderFulfillmentProcess()) {
        self.process = process
    }

    /// The trigger `event` means for its order, or `nil` when the order process does not react to it.
    public func trigger(for event: OrderSystemEvent) -> ProcessTrigger? {
        switch event {
        case .orderPlaced: .orderPlaced
        case .paymentConfirmed(let event): .paymentConfirmed(paymentID: event.paymentID)
        case .paymentFailed(let event): .failed(reason: "payment failed: \(event.reason)")
        case .inventoryReserved(let event): .inventoryReserved(reservationID: event.reservationID)
        case .inventoryUnavailable(let event): .failed(reason: "inventory unavailable" + (event.sku.map { " for \($0)" } ?? ""))
        case .shipmentDispatched(let event): .shipped(trackingNumber: event.trackingNumber)
        case .shipmentDelivered: .delivered
        case .shipmentFailed(let event): .failed(reason: "shipment failed: \(event.reason)")
        case .customerNotified: nil
        }
    }

    /// The command for `event` received at `now`, or `nil` when the event is ignored.
    public func command(for event: OrderSystemEvent, at now: Date) throws(EventStoreError) -> AdvanceOrderProcess? {
        guard let trigger = trigger(for: event) else { return nil }
        return try AdvanceOrderProcess(orderID: event.orderID, trigger: trigger, at: now, process: process)
    }
}

/// The order process's entry point for a message worker: type name, payload and message id in, command with
/// its idempotency key out.
public struct OrderFulfillmentRouter: ProcessEventRouter {
    /// The consumer's name, the first half of every idempotency key (`<consumer>/<message id>`).
    public var consumer: String
    /// Maps events to commands.
    public var handler: OrderFulfillmentHandler

    /// Creates the router.
    public init(consumer: String = "order-fulfillment", handler: OrderFulfillmentHandler = OrderFulfillmentHandler()) {
        self.consumer = consumer
        self.handler = handler
    }

    /// Every order system event type.
    public var eventTypes: Set<String> { OrderSystemEvent.typeNames }

    /// The idempotency key of message `messageID` for this consumer.
    public func idempotencyKey(messageID: String) throws(EventStoreError) -> IdempotencyKey {
        try IdempotencyKey(consumer: consumer, messageID: messageID)
    }

    /// Decodes `event`, maps it to a command and attaches the idempotency key and metadata: the order id as
    /// correlation id, the message id as causation and source message id, the message's trace context.
    public func route(_ event: IncomingEvent) throws(RoutingError) -> RoutedCommand? {
        let decoded: OrderSystemEvent
        do {
            decoded = try OrderSystemEvent(eventType: event.eventType, payload: event.payload)
        } catch {
            switch error {
            case .unknownEventType: throw RoutingError(.unknownEventType, eventType: event.eventType, error.description)
            case .invalidPayload: throw RoutingError(.invalidPayload, eventType: event.eventType, error.description)
            }
        }
        // A message about order A whose correlation id names order B is refused: handling it for A would stamp
        // B's id on A's events, and handling it for B would let any sender move B with A's payload.
        // An empty correlation id says nothing (some publishers send one for none).
        if let claimed = event.metadata.correlationID, !claimed.isEmpty, claimed != decoded.orderID,
           claimed != (try? OrderFulfillmentProcess.processID(orderID: decoded.orderID))?.description {
            throw RoutingError(.correlationMismatch, eventType: event.eventType,
                               "the correlation id \(String(claimed.prefix(100)).debugDescription) names another order than the payload's \(String(decoded.orderID.prefix(100)).debugDescription)")
        }
        do {
            guard let command = try handler.command(for: decoded, at: event.receivedAt) else { return nil }
            let metadata = event.metadata.merged(with: EventMetadata(
                correlationID: event.metadata.correlationID.flatMap { $0.isEmpty ? nil : $0 } ?? decoded.orderID,
                causationID: event.messageID,
                sourceMessageID: event.messageID
            ))
            let options = ExecutionOptions(idempotencyKey: try idempotencyKey(messageID: event.messageID), metadata: metadata)
            return RoutedCommand(command, processID: command.processID, options: options)
        } catch {
            throw RoutingError(.invalidPayload, eventType: event.eventType, error.message)
        }
    }
}
