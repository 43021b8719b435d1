import EventCore
import Foundation
import Processes

/// The order fulfillment process's own events: the facts it learned and the steps it completed. They live in
/// the process stream beside the lifecycle events (see ``Processes/ProcessEvent``).
public enum OrderProcessEvent: DomainEvent, Hashable {
    /// The payment was confirmed.
    case paymentRecorded(paymentID: String)
    /// Stock was reserved.
    case inventoryRecorded(reservationID: String)
    /// The shipment was dispatched with this tracking number.
    case shippingInfoUpdated(trackingNumber: String)
    /// The shipment was delivered.
    case deliveryRecorded
    /// The process moved on to `step`.
    case stepCompleted(FulfillmentStep)

    /// The stored type names.
    public enum TypeName {
        /// `OrderPaymentRecorded`.
        public static let paymentRecorded = "OrderPaymentRecorded"
        /// `OrderInventoryRecorded`.
        public static let inventoryRecorded = "OrderInventoryRecorded"
        /// `OrderShippingInfoUpdated`.
        public static let shippingInfoUpdated = "OrderShippingInfoUpdated"
        /// `OrderDeliveryRecorded`.
        public static let deliveryRecorded = "OrderDeliveryRecorded"
        /// `OrderStepCompleted`.
        public static let stepCompleted = "OrderStepCompleted"
        /// All of them.
        public static let all: Set<String> = [paymentRecorded, inventoryRecorded, shippingInfoUpdated, deliveryRecorded, stepCompleted]
    }

    /// The stored type name.
    public var eventType: String {
        switch self {
        case .paymentRecorded: TypeName.paymentRecorded
        case .inventoryRecorded: TypeName.inventoryRecorded
        case .shippingInfoUpdated: TypeName.shippingInfoUpdated
        case .deliveryRecorded: TypeName.deliveryRecorded
        case .stepCompleted: TypeName.stepCompleted
        }
    }

    /// Only the order process's names.
    public static func handles(eventType: String) -> Bool { TypeName.all.contains(eventType) }

    private enum CodingKeys: String, CodingKey {
        case paymentID = "payment_id", reservationID = "reservation_id", trackingNumber = "tracking_number", step
    }

    /// Decodes the fields of the case named by the envelope key (the last element of the coding path).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        switch decoder.codingPath.last?.stringValue {
        case TypeName.paymentRecorded: self = .paymentRecorded(paymentID: try container.decode(String.self, forKey: .paymentID))
        case TypeName.inventoryRecorded: self = .inventoryRecorded(reservationID: try container.decode(String.self, forKey: .reservationID))
        case TypeName.shippingInfoUpdated: self = .shippingInfoUpdated(trackingNumber: try container.decode(String.self, forKey: .trackingNumber))
        case TypeName.deliveryRecorded: self = .deliveryRecorded
        case TypeName.stepCompleted: self = .stepCompleted(try container.decode(FulfillmentStep.self, forKey: .step))
        case let other:
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "\(other ?? "nothing") is not an order process event"))
        }
    }

    /// Encodes the case's fields.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .paymentRecorded(let id): try container.encode(id, forKey: .paymentID)
        case .inventoryRecorded(let id): try container.encode(id, forKey: .reservationID)
        case .shippingInfoUpdated(let number): try container.encode(number, forKey: .trackingNumber)
        case .deliveryRecorded: break
        case .stepCompleted(let step): try container.encode(step, forKey: .step)
        }
    }
}
