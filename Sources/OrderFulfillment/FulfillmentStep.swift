/// The steps of an order's fulfillment, in order, or its failure.
public enum FulfillmentStep: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Waiting for the payment.
    case paymentPending
    /// Paid; waiting for stock.
    case paymentConfirmed
    /// Stock reserved; waiting for dispatch.
    case inventoryReserved
    /// On its way.
    case shipped
    /// Handed to the customer.
    case delivered
    /// Done.
    case completed
    /// Given up.
    case failed(reason: String)

    /// The step after this one on the happy path, or `nil` for the end and for failure.
    public var next: FulfillmentStep? {
        switch self {
        case .paymentPending: .paymentConfirmed
        case .paymentConfirmed: .inventoryReserved
        case .inventoryReserved: .shipped
        case .shipped: .delivered
        case .delivered: .completed
        case .completed, .failed: nil
        }
    }

    /// `PaymentPending`, `Failed(<reason>)`, ...
    public var description: String {
        switch self {
        case .paymentPending: "PaymentPending"
        case .paymentConfirmed: "PaymentConfirmed"
        case .inventoryReserved: "InventoryReserved"
        case .shipped: "Shipped"
        case .delivered: "Delivered"
        case .completed: "Completed"
        case .failed(let reason): "Failed(\(reason))"
        }
    }
}
