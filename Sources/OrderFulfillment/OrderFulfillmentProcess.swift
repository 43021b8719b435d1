import EventCore
import Foundation
import Processes

/// What moves an order's fulfillment: one case per kind of system event it listens to.
public enum ProcessTrigger: Sendable, Hashable {
    /// The order was placed: starts the process.
    case orderPlaced
    /// The payment went through.
    case paymentConfirmed(paymentID: String)
    /// Stock was reserved.
    case inventoryReserved(reservationID: String)
    /// The parcel left the warehouse.
    case shipped(trackingNumber: String)
    /// The parcel reached the customer.
    case delivered
    /// Something the process cannot recover from (payment refused, no stock, parcel lost).
    case failed(reason: String)
}

/// What the order process knows, folded from its own events.
public struct OrderFulfillmentState: Sendable, Hashable {
    /// The step reached on the happy path (failure is in the lifecycle; see ``currentStep(of:)``).
    public var step: FulfillmentStep = .paymentPending
    /// The payment, once confirmed.
    public var paymentID: String?
    /// The stock reservation, once made.
    public var reservationID: String?
    /// The tracking number, once dispatched.
    public var trackingNumber: String?
    /// Whether the parcel was delivered.
    public var delivered = false

    /// A process that knows nothing yet.
    public init() {}

    /// Whether the payment was confirmed.
    public var paymentConfirmed: Bool { paymentID != nil }
    /// Whether stock was reserved.
    public var inventoryReserved: Bool { reservationID != nil }

    /// The step the known facts allow after the current one, or `nil` if the process must wait.
    var nextReachableStep: FulfillmentStep? {
        switch step {
        case .paymentPending where paymentConfirmed: .paymentConfirmed
        case .paymentConfirmed where inventoryReserved: .inventoryReserved
        case .inventoryReserved where trackingNumber != nil: .shipped
        case .shipped where delivered: .delivered
        default: nil
        }
    }
}

/// The order fulfillment process manager: PaymentPending → PaymentConfirmed → InventoryReserved → Shipped →
/// Delivered → Completed, or Failed(reason).
///
/// Facts are recorded as they arrive, in any order, and the process advances as far as the facts allow, so
/// an inventory reservation that overtakes the payment confirmation is not lost. A repeated fact records
/// nothing. A step that waits too long fires a timeout, which is retried by the timeout policy before the
/// process fails; past the overall deadline the process fails too.
public struct OrderFulfillmentProcess: ProcessDefinition {
    /// `order-fulfillment`.
    public static let processType = "order-fulfillment"

    /// When timeouts fire and how they are retried.
    public var timeoutPolicy: ProcessTimeoutPolicy

    /// One day per step, seven days overall, three retries after one hour doubling up to eight hours.
    public static let defaultTimeoutPolicy = ProcessTimeoutPolicy(
        stepTimeout: .seconds(86_400),
        overallTimeout: .seconds(7 * 86_400),
        retryPolicy: RetryPolicy(maxRetries: 3, backoff: .exponential(initial: .seconds(3600), multiplier: 2, maximum: .seconds(8 * 3600)), jitter: 0)
    )

    /// Creates the process manager.
    public init(timeoutPolicy: ProcessTimeoutPolicy = OrderFulfillmentProcess.defaultTimeoutPolicy) {
        self.timeoutPolicy = timeoutPolicy
    }

    /// Nothing known.
    public var initialState: OrderFulfillmentState { OrderFulfillmentState() }

    /// The process stream of order `orderID`: `order-fulfillment-<orderID>`.
    public static func processID(orderID: String) throws(EventStoreError) -> StreamID {
        try processID(for: orderID)
    }

    /// Folds one of the process's events.
    public func apply(_ event: OrderProcessEvent, to state: inout OrderFulfillmentState) {
        switch event {
        case .paymentRecorded(let id): state.paymentID = id
        case .inventoryRecorded(let id): state.reservationID = id
        case .shippingInfoUpdated(let number): state.trackingNumber = number
        case .deliveryRecorded: state.delivered = true
        case .stepCompleted(let step): state.step = step
        }
    }

    /// Records the new fact, then completes every step the facts allow; completes the process once delivered.
    public func decide(_ trigger: ProcessTrigger, in process: ProcessSnapshot<OrderFulfillmentState>, at now: Date) throws -> ProcessDecision<OrderProcessEvent> {
        var state = process.state
        var events: [OrderProcessEvent] = []
        func record(_ event: OrderProcessEvent) {
            events.append(event)
            apply(event, to: &state)
        }
        switch trigger {
        case .orderPlaced:
            break
        case .failed(let reason):
            return .fail(reason)
        case .paymentConfirmed(let id):
            if !state.paymentConfirmed { record(.paymentRecorded(paymentID: id)) }
        case .inventoryReserved(let id):
            if !state.inventoryReserved { record(.inventoryRecorded(reservationID: id)) }
        case .shipped(let number):
            if state.trackingNumber == nil { record(.shippingInfoUpdated(trackingNumber: number)) }
        case .delivered:
            if !state.delivered { record(.deliveryRecorded) }
        }
        let stepBefore = state.step
        while let next = state.nextReachableStep { record(.stepCompleted(next)) }
        if state.step == .delivered { return .complete(events) }
        return ProcessDecision(events: events, madeProgress: state.step != stepBefore)
    }
}

extension ProcessSnapshot where State == OrderFulfillmentState {
    /// The step as the chapter names it: the happy-path step, `completed` or `failed(reason)`.
    public var currentStep: FulfillmentStep {
        switch status {
        case .completed: .completed
        case .failed(let reason): .failed(reason: reason)
        case .notStarted, .running: state.step
        }
    }

    /// The order id, once the process started.
    public var orderID: String? { lifecycle.started?.businessID }

    /// The overall deadline.
    public var timeoutAt: Date? { lifecycle.started?.deadline }

    /// Retries since the last progress.
    public var retryCount: Int { lifecycle.currentRetries }

    /// When the process started.
    public var createdAt: Date? { lifecycle.started?.startedAt }
}

/// Moves the fulfillment of one order on a trigger: the command the event handler builds.
public struct AdvanceOrderProcess: Command {
    private let advance: AdvanceProcess<OrderFulfillmentProcess>

    /// Creates the command.
    /// - Parameters:
    ///   - orderID: the order; the process stream is derived from it.
    ///   - trigger: what happened.
    ///   - now: when it is handled.
    ///   - process: the process manager (its timeout policy).
    /// - Throws: ``EventStoreError/Code/invalidStreamID`` for an order id that makes no valid stream id.
    public init(orderID: String, trigger: ProcessTrigger, at now: Date, process: OrderFulfillmentProcess = OrderFulfillmentProcess()) throws(EventStoreError) {
        advance = try AdvanceProcess(definition: process, businessID: orderID, trigger: trigger, at: now)
    }

    /// The order.
    public var orderID: String { advance.businessID }
    /// What happened.
    public var trigger: ProcessTrigger { advance.trigger }
    /// When it is handled.
    public var now: Date { advance.now }
    /// The process stream.
    public var processID: StreamID { advance.processID }

    /// The process stream.
    public var readStreams: [StreamID] { advance.readStreams }
    /// A process that has not started.
    public var initialState: ProcessSnapshot<OrderFulfillmentState> { advance.initialState }
    /// Unused: the fold needs the stream of each event.
    public func apply(_ state: inout ProcessSnapshot<OrderFulfillmentState>, _ event: ProcessEvent<OrderProcessEvent>) {}
    /// Folds lifecycle and order events.
    public func apply(_ state: inout ProcessSnapshot<OrderFulfillmentState>, _ event: ProcessEvent<OrderProcessEvent>, recorded: StoredEvent) {
        advance.apply(&state, event, recorded: recorded)
    }
    /// Decides as ``Processes/AdvanceProcess`` does.
    public func handle(_ state: ProcessSnapshot<OrderFulfillmentState>, context: CommandContext) throws -> [StreamWrite<ProcessEvent<OrderProcessEvent>>] {
        try advance.handle(state, context: context)
    }
}
