import EventCore
import Foundation

/// An event of another part of the system that concerns an order: what the order process listens to.
/// Payloads are flat JSON objects with snake_case keys and always an `order_id`.
public protocol OrderSystemEventPayload: DomainEvent, Hashable {
    /// The stable type name, such as `PaymentConfirmed`.
    static var typeName: String { get }
    /// The order it concerns.
    var orderID: String { get }
}

extension OrderSystemEventPayload {
    /// ``typeName``.
    public var eventType: String { Self.typeName }
    /// Only its own type name.
    public static func handles(eventType: String) -> Bool { eventType == typeName }
}

/// An order was placed.
public struct OrderPlaced: OrderSystemEventPayload {
    /// `OrderPlaced`.
    public static let typeName = "OrderPlaced"
    /// The order.
    public var orderID: String
    /// Its total, in cents.
    public var totalCents: Int?

    /// Creates the event.
    public init(orderID: String, totalCents: Int? = nil) {
        self.orderID = orderID
        self.totalCents = totalCents
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", totalCents = "total_cents" }
}

/// The payment service took the money.
public struct PaymentConfirmed: OrderSystemEventPayload {
    /// `PaymentConfirmed`.
    public static let typeName = "PaymentConfirmed"
    /// The order.
    public var orderID: String
    /// The payment.
    public var paymentID: String

    /// Creates the event.
    public init(orderID: String, paymentID: String) {
        self.orderID = orderID
        self.paymentID = paymentID
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", paymentID = "payment_id" }
}

/// The payment service could not take the money.
public struct PaymentFailed: OrderSystemEventPayload {
    /// `PaymentFailed`.
    public static let typeName = "PaymentFailed"
    /// The order.
    public var orderID: String
    /// Why.
    public var reason: String

    /// Creates the event.
    public init(orderID: String, reason: String) {
        self.orderID = orderID
        self.reason = reason
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", reason }
}

/// The warehouse reserved the order's items.
public struct InventoryReserved: OrderSystemEventPayload {
    /// `InventoryReserved`.
    public static let typeName = "InventoryReserved"
    /// The order.
    public var orderID: String
    /// The reservation.
    public var reservationID: String

    /// Creates the event.
    public init(orderID: String, reservationID: String) {
        self.orderID = orderID
        self.reservationID = reservationID
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", reservationID = "reservation_id" }
}

/// The warehouse cannot supply the order's items.
public struct InventoryUnavailable: OrderSystemEventPayload {
    /// `InventoryUnavailable`.
    public static let typeName = "InventoryUnavailable"
    /// The order.
    public var orderID: String
    /// The item that is missing, if known.
    public var sku: String?

    /// Creates the event.
    public init(orderID: String, sku: String? = nil) {
        self.orderID = orderID
        self.sku = sku
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", sku }
}

/// The parcel left the warehouse.
public struct ShipmentDispatched: OrderSystemEventPayload {
    /// `ShipmentDispatched`.
    public static let typeName = "ShipmentDispatched"
    /// The order.
    public var orderID: String
    /// The carrier's tracking number.
    public var trackingNumber: String

    /// Creates the event.
    public init(orderID: String, trackingNumber: String) {
        self.orderID = orderID
        self.trackingNumber = trackingNumber
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", trackingNumber = "tracking_number" }
}

/// The parcel reached the customer.
public struct ShipmentDelivered: OrderSystemEventPayload {
    /// `ShipmentDelivered`.
    public static let typeName = "ShipmentDelivered"
    /// The order.
    public var orderID: String

    /// Creates the event.
    public init(orderID: String) {
        self.orderID = orderID
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id" }
}

/// The carrier lost or returned the parcel.
public struct ShipmentFailed: OrderSystemEventPayload {
    /// `ShipmentFailed`.
    public static let typeName = "ShipmentFailed"
    /// The order.
    public var orderID: String
    /// Why.
    public var reason: String

    /// Creates the event.
    public init(orderID: String, reason: String) {
        self.orderID = orderID
        self.reason = reason
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", reason }
}

/// The customer was told about the order's state. The order process does not react to it.
public struct CustomerNotified: OrderSystemEventPayload {
    /// `CustomerNotified`.
    public static let typeName = "CustomerNotified"
    /// The order.
    public var orderID: String
    /// The channel used, such as `email`.
    public var channel: String

    /// Creates the event.
    public init(orderID: String, channel: String) {
        self.orderID = orderID
        self.channel = channel
    }

    private enum CodingKeys: String, CodingKey { case orderID = "order_id", channel }
}

/// Every system event about orders, as the handler receives it.
public enum OrderSystemEvent: Sendable, Hashable {
    /// See ``OrderPlaced``.
    case orderPlaced(OrderPlaced)
    /// See ``PaymentConfirmed``.
    case paymentConfirmed(PaymentConfirmed)
    /// See ``PaymentFailed``.
    case paymentFailed(PaymentFailed)
    /// See ``InventoryReserved``.
    case inventoryReserved(InventoryReserved)
    /// See ``InventoryUnavailable``.
    case inventoryUnavailable(InventoryUnavailable)
    /// See ``ShipmentDispatched``.
    case shipmentDispatched(ShipmentDispatched)
    /// See ``ShipmentDelivered``.
    case shipmentDelivered(ShipmentDelivered)
    /// See ``ShipmentFailed``.
    case shipmentFailed(ShipmentFailed)
    /// See ``CustomerNotified``.
    case customerNotified(CustomerNotified)

    /// The type names, each with the decoder of its payload.
    static let decoders: [String: @Sendable (Data) throws -> OrderSystemEvent] = [
        OrderPlaced.typeName: { .orderPlaced(try decode($0)) },
        PaymentConfirmed.typeName: { .paymentConfirmed(try decode($0)) },
        PaymentFailed.typeName: { .paymentFailed(try decode($0)) },
        InventoryReserved.typeName: { .inventoryReserved(try decode($0)) },
        InventoryUnavailable.typeName: { .inventoryUnavailable(try decode($0)) },
        ShipmentDispatched.typeName: { .shipmentDispatched(try decode($0)) },
        ShipmentDelivered.typeName: { .shipmentDelivered(try decode($0)) },
        ShipmentFailed.typeName: { .shipmentFailed(try decode($0)) },
        CustomerNotified.typeName: { .customerNotified(try decode($0)) },
    ]

    /// Every type name known.
    public static var typeNames: Set<String> { Set(decoders.keys) }

    /// Decodes the payload of an event of type `eventType`.
    public init(eventType: String, payload: Data) throws(OrderEventDecodingError) {
        guard let decoder = Self.decoders[eventType] else { throw .unknownEventType(eventType) }
        let event: OrderSystemEvent
        do {
            event = try decoder(payload)
        } catch {
            throw .invalidPayload(eventType: eventType, detail: Self.detail(of: error))
        }
        if event.orderID.isEmpty { throw .invalidPayload(eventType: eventType, detail: "order_id is empty") }
        if let problem = StreamID.problem(with: "\(OrderFulfillmentProcess.processType)-\(event.orderID)") {
            throw .invalidPayload(eventType: eventType, detail: "order_id makes no valid stream id: \(problem)")
        }
        self = event
    }

    /// The order the event concerns.
    public var orderID: String {
        switch self {
        case .orderPlaced(let event): event.orderID
        case .paymentConfirmed(let event): event.orderID
        case .paymentFailed(let event): event.orderID
        case .inventoryReserved(let event): event.orderID
        case .inventoryUnavailable(let event): event.orderID
        case .shipmentDispatched(let event): event.orderID
        case .shipmentDelivered(let event): event.orderID
        case .shipmentFailed(let event): event.orderID
        case .customerNotified(let event): event.orderID
        }
    }

    /// The type name and JSON payload, as another service would publish it.
    public func encoded() throws -> (eventType: String, payload: Data) {
        let codec = EventCodec()
        switch self {
        case .orderPlaced(let event): return try codec.encode(event)
        case .paymentConfirmed(let event): return try codec.encode(event)
        case .paymentFailed(let event): return try codec.encode(event)
        case .inventoryReserved(let event): return try codec.encode(event)
        case .inventoryUnavailable(let event): return try codec.encode(event)
        case .shipmentDispatched(let event): return try codec.encode(event)
        case .shipmentDelivered(let event): return try codec.encode(event)
        case .shipmentFailed(let event): return try codec.encode(event)
        case .customerNotified(let event): return try codec.encode(event)
        }
    }

    private static func decode<Payload: Decodable>(_ data: Data) throws -> Payload {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(Payload.self, from: data)
    }

    /// Names the missing or mistyped field without quoting the payload.
    private static func detail(of error: any Error) -> String {
        switch error as? DecodingError {
        case .keyNotFound(let key, _)?: "missing field \(key.stringValue)"
        case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?:
            "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        case .dataCorrupted(let context)?: "not valid JSON: \(context.debugDescription)"
        default: "the payload does not decode"
        }
    }
}

/// Why a message could not be read as an order system event.
public enum OrderEventDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The type name is not one the order process knows.
    case unknownEventType(String)
    /// The payload does not decode or fails validation.
    case invalidPayload(eventType: String, detail: String)

    /// A sentence for logs, without payload contents.
    public var description: String {
        switch self {
        case .unknownEventType(let name): "unknown event type \(name.debugDescription)"
        case .invalidPayload(let name, let detail): "invalid \(name) payload: \(detail)"
        }
    }
}
