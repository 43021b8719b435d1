import Foundation
import Processes

/// How the simulated external services behave.
public struct SimulationSettings: Sendable, Hashable, Codable {
    /// Orders to place.
    public var orders: Int = 200
    /// Trips to book.
    public var trips: Int = 40
    /// Share of payments declined.
    public var paymentFailureRate: Double = 0.05
    /// Share of orders whose stock is unavailable.
    public var inventoryFailureRate: Double = 0.05
    /// Share of shipments that fail.
    public var shipmentFailureRate: Double = 0.03
    /// Share of orders where a service never answers, so the process's timeouts end it.
    public var lostReplyRate: Double = 0.03
    /// Share of replies sent twice with the same message id (the fleet must absorb them).
    public var duplicateRate: Double = 0.05
    /// Share of payment confirmations sent in a legacy bus's format (no type, ids in the body).
    public var legacyPaymentRate: Double = 0.2
    /// Share of trips whose flight is sold out (the hotel booking is compensated).
    public var soldOutFlightRate: Double = 0.15
    /// Share of trips whose car is sold out (flight and hotel are compensated).
    public var soldOutCarRate: Double = 0.1
    /// Messages that cannot be processed, sent on purpose; they must end in the dead-letter queue.
    public var poisonMessages: Int = 5
    /// Slowest reply of a service, in milliseconds (replies take 0 to this long).
    public var maximumReplyDelayMilliseconds: Int = 50
    /// Seed of every random choice, so a run can be repeated.
    public var seed: UInt64 = 42
    /// How fast orders and trips are opened, per second; 0 opens them all at once.
    public var openingsPerSecond: Int = 0

    /// The defaults: a couple of hundred orders and some trips, with a few of every failure.
    public init() {}
}

/// A message a simulated service sends.
public struct SimulatedMessage: Sendable, Hashable {
    /// The exchange it goes to.
    public enum Bus: String, Sendable, Hashable {
        /// The domain events exchange, with the fleet's conventions.
        case domain
        /// An existing bus's exchange: no `type` property, ids in the body.
        case legacy
    }

    /// Which exchange.
    public var bus: Bus
    /// The routing key.
    public var routingKey: String
    /// The event type (nil for legacy and some poison messages).
    public var eventType: String?
    /// The message id (nil for legacy messages, whose id is in the body).
    public var messageID: String?
    /// The correlation id.
    public var correlationID: String?
    /// The JSON body (or not JSON, for poison messages).
    public var body: Data
    /// How long after the triggering event to send it.
    public var delayMilliseconds: Int
}

/// What the simulator expects a process to end as.
public enum ExpectedOutcome: String, Sendable, Hashable, Codable, CaseIterable {
    /// The order completed, or the trip was fully booked.
    case completed
    /// The order failed on a business refusal (payment declined, no stock, shipment failed).
    case failed
    /// The order failed because a service never answered and its timeouts ran out.
    case timedOut
    /// The trip failed and every booking made was cancelled.
    case compensated
}

/// The simulated external services of the example domain: payments, inventory, shipping and three travel
/// providers. Pure logic, no I/O: the caller sends what it returns and feeds it the process events the fleet
/// publishes. Every choice comes from a seeded generator, so the expected end of every process is known
/// from the start and a run can be checked and repeated.
public struct ServiceSimulator: Sendable {
    /// The settings.
    public let settings: SimulationSettings
    /// The expected end of every process, by business id (order id or trip id).
    public private(set) var expected: [String: ExpectedOutcome] = [:]
    /// How each process ended, as observed on the process events exchange.
    public private(set) var observed: [String: ExpectedOutcome] = [:]
    /// Capacity announcements not yet seen back as stored events.
    public private(set) var capacityPending: Set<String> = []
    private var plans: [String: OrderPlan] = [:]
    private var random: SimulationRandom
    private var sequence = 0

    private struct OrderPlan: Sendable {
        enum Fault: Sendable { case none, paymentDeclined, paymentLost, noStock, inventoryLost, shipmentFailed, shipmentLost }
        var fault: Fault
        var legacyPayment: Bool
    }

    /// A simulator with `settings`.
    public init(settings: SimulationSettings) {
        self.settings = settings
        random = SimulationRandom(seed: settings.seed)
    }

    /// The hotels, flights and cars with room, announced before any trip is requested.
    public mutating func capacityAnnouncements() -> [SimulatedMessage] {
        var messages: [SimulatedMessage] = []
        let units = max(1, settings.trips) * 2
        let resources = (0..<Self.resourcesPerKind).flatMap { index in
            [("hotel", Self.hotel(index)), ("flight", Self.flight(index)), ("car", Self.car(index))]
        }
        for (kind, id) in resources {
            let body = Self.json(["resource_kind": kind, "resource_id": id, "units": units])
            let messageID = "capacity-\(kind)-\(id)-\(settings.seed)"
            capacityPending.insert("\(kind)-\(id)")
            messages.append(SimulatedMessage(bus: .domain, routingKey: "booking.capacity", eventType: TravelCapacityRequest.eventType,
                                             messageID: messageID, correlationID: "\(kind)-\(id)", body: body, delayMilliseconds: 0))
        }
        return messages
    }

    /// The orders placed, the trips requested and the poison messages, with their expected ends recorded.
    public mutating func openingMessages() -> [SimulatedMessage] {
        var messages: [SimulatedMessage] = []
        for index in 0..<settings.orders {
            let orderID = "order-\(settings.seed)-\(index)"
            let plan = planOrder()
            plans[orderID] = plan
            expected[orderID] = Self.expectation(for: plan.fault)
            messages.append(domainMessage("OrderPlaced", routingKey: "order.placed", id: orderID,
                                          body: ["order_id": orderID, "total_cents": 1000 + index]))
        }
        for index in 0..<settings.trips {
            let tripID = "trip-\(settings.seed)-\(index)"
            let draw = random.unit()
            // Trips spread over a few hotels, flights and cars, as real ones do (one resource for all would be
            // a hot stream where every booking conflicts with the others).
            let soldOutFlight = draw < settings.soldOutFlightRate
            let soldOutCar = !soldOutFlight && draw < settings.soldOutFlightRate + settings.soldOutCarRate
            let flight = soldOutFlight ? "fl-sold-out" : Self.flight(index)
            let car = soldOutCar ? "car-sold-out" : Self.car(index)
            expected[tripID] = soldOutFlight || soldOutCar ? .compensated : .completed
            let saga = TravelBookingSaga(
                tripID: tripID, hotel: .init(resourceID: Self.hotel(index), bookingID: "\(tripID)-hotel"),
                flight: .init(resourceID: flight, bookingID: "\(tripID)-flight"), car: .init(resourceID: car, bookingID: "\(tripID)-car"))
            let body = (try? JSONEncoder().encode(saga)) ?? Data()
            messages.append(SimulatedMessage(bus: .domain, routingKey: "booking.requested", eventType: TravelCapacityRequest.tripRequested,
                                             messageID: nextMessageID(), correlationID: tripID, body: body, delayMilliseconds: 0))
        }
        for index in 0..<settings.poisonMessages {
            switch index % 3 {
            case 0:
                messages.append(SimulatedMessage(bus: .domain, routingKey: "order.garbled", eventType: "PaymentConfirmed", messageID: nextMessageID(),
                                                 correlationID: nil, body: Data("{not json".utf8), delayMilliseconds: 0))
            case 1:
                messages.append(SimulatedMessage(bus: .domain, routingKey: "order.unknown", eventType: "OrderTeleported", messageID: nextMessageID(),
                                                 correlationID: nil, body: Self.json(["order_id": "nowhere"]), delayMilliseconds: 0))
            default:
                messages.append(SimulatedMessage(bus: .domain, routingKey: "payment.confirmed", eventType: "PaymentConfirmed", messageID: nextMessageID(),
                                                 correlationID: nil, body: Self.json(["payment_id": "p-without-order"]), delayMilliseconds: 0))
            }
        }
        return messages
    }

    /// Feeds one event the fleet published; returns the services' replies.
    ///
    /// - Parameters:
    ///   - eventType: the event's type name.
    ///   - streamID: the stream it is stored in (`order-fulfillment-…`, `travel-booking-…`).
    ///   - payload: its JSON payload.
    public mutating func observe(eventType: String, streamID: String, payload: Data) -> [SimulatedMessage] {
        if eventType == "TravelCapacityAdded" {
            capacityPending.remove(streamID)
            return []
        }
        let orderPrefix = "order-fulfillment-", tripPrefix = "travel-booking-"
        if streamID.hasPrefix(tripPrefix) {
            let tripID = String(streamID.dropFirst(tripPrefix.count))
            switch eventType {
            case "ProcessCompleted": observed[tripID] = .completed
            case "ProcessFailed": observed[tripID] = .compensated
            default: break
            }
            return []
        }
        guard streamID.hasPrefix(orderPrefix) else { return [] }
        let orderID = String(streamID.dropFirst(orderPrefix.count))
        guard let plan = plans[orderID] else { return [] }
        switch eventType {
        case "ProcessStarted":
            switch plan.fault {
            case .paymentDeclined:
                return reply("PaymentFailed", routingKey: "payment.failed", orderID: orderID, body: ["order_id": orderID, "reason": "card declined"])
            case .paymentLost:
                return []
            default:
                if plan.legacyPayment {
                    let settlement = "settlement-\(orderID)"
                    return duplicated(SimulatedMessage(bus: .legacy, routingKey: "settlement.completed", eventType: nil, messageID: nil, correlationID: nil,
                                                       body: Self.json(["order_id": orderID, "settlement_id": settlement, "amount": 12.5]),
                                                       delayMilliseconds: delay()))
                }
                return reply("PaymentConfirmed", routingKey: "payment.confirmed", orderID: orderID, body: ["order_id": orderID, "payment_id": "pay-\(orderID)"])
            }
        case "OrderStepCompleted":
            guard let step = Self.step(in: payload) else { return [] }
            switch (step, plan.fault) {
            case (.paymentConfirmed, .noStock):
                return reply("InventoryUnavailable", routingKey: "inventory.unavailable", orderID: orderID, body: ["order_id": orderID, "sku": "sku-1"])
            case (.paymentConfirmed, .inventoryLost):
                return []
            case (.paymentConfirmed, _):
                return reply("InventoryReserved", routingKey: "inventory.reserved", orderID: orderID, body: ["order_id": orderID, "reservation_id": "res-\(orderID)"])
            case (.inventoryReserved, .shipmentFailed):
                return reply("ShipmentFailed", routingKey: "shipment.failed", orderID: orderID, body: ["order_id": orderID, "reason": "address unknown"])
            case (.inventoryReserved, .shipmentLost):
                return []
            case (.inventoryReserved, _):
                return reply("ShipmentDispatched", routingKey: "shipment.dispatched", orderID: orderID, body: ["order_id": orderID, "tracking_number": "trk-\(orderID)"])
            case (.shipped, _):
                return reply("ShipmentDelivered", routingKey: "shipment.delivered", orderID: orderID, body: ["order_id": orderID])
            default:
                return []
            }
        case "ProcessCompleted":
            observed[orderID] = .completed
            return []
        case "ProcessFailed":
            observed[orderID] = Self.expectation(for: plan.fault) == .timedOut ? .timedOut : .failed
            return []
        default:
            return []
        }
    }

    /// Processes whose observed end differs from the expected one (or that have not ended yet).
    public var mismatches: [String: (expected: ExpectedOutcome, observed: ExpectedOutcome?)] {
        var result: [String: (expected: ExpectedOutcome, observed: ExpectedOutcome?)] = [:]
        for (id, outcome) in expected where observed[id] != outcome {
            result[id] = (outcome, observed[id])
        }
        return result
    }

    /// Whether every process has ended.
    public var isFinished: Bool { observed.count >= expected.count && expected.keys.allSatisfy { observed[$0] != nil } }

    /// How many processes ended each way so far.
    public var observedCounts: [ExpectedOutcome: Int] {
        var counts: [ExpectedOutcome: Int] = [:]
        for outcome in observed.values { counts[outcome, default: 0] += 1 }
        return counts
    }

    // MARK: - Helpers

    private static let resourcesPerKind = 4
    private static func hotel(_ index: Int) -> String { "hotel-\(index % resourcesPerKind)" }
    private static func flight(_ index: Int) -> String { "fl-\(100 + index % resourcesPerKind)" }
    private static func car(_ index: Int) -> String { "car-\(index % resourcesPerKind)" }

    private mutating func planOrder() -> OrderPlan {
        let draw = random.unit()
        var threshold = settings.paymentFailureRate
        let fault: OrderPlan.Fault
        let lostShare = settings.lostReplyRate / 3
        if draw < threshold {
            fault = .paymentDeclined
        } else if draw < { threshold += settings.inventoryFailureRate; return threshold }() {
            fault = .noStock
        } else if draw < { threshold += settings.shipmentFailureRate; return threshold }() {
            fault = .shipmentFailed
        } else if draw < { threshold += lostShare; return threshold }() {
            fault = .paymentLost
        } else if draw < { threshold += lostShare; return threshold }() {
            fault = .inventoryLost
        } else if draw < { threshold += lostShare; return threshold }() {
            fault = .shipmentLost
        } else {
            fault = .none
        }
        return OrderPlan(fault: fault, legacyPayment: random.unit() < settings.legacyPaymentRate)
    }

    private static func expectation(for fault: OrderPlan.Fault) -> ExpectedOutcome {
        switch fault {
        case .none: .completed
        case .paymentDeclined, .noStock, .shipmentFailed: .failed
        case .paymentLost, .inventoryLost, .shipmentLost: .timedOut
        }
    }

    private mutating func reply(_ type: String, routingKey: String, orderID: String, body: [String: Any]) -> [SimulatedMessage] {
        var message = domainMessage(type, routingKey: routingKey, id: orderID, body: body)
        message.delayMilliseconds = delay()
        return duplicated(message)
    }

    private mutating func duplicated(_ message: SimulatedMessage) -> [SimulatedMessage] {
        guard random.unit() < settings.duplicateRate else { return [message] }
        var again = message
        again.delayMilliseconds += 5
        return [message, again]
    }

    private mutating func domainMessage(_ type: String, routingKey: String, id: String, body: [String: Any]) -> SimulatedMessage {
        SimulatedMessage(bus: .domain, routingKey: routingKey, eventType: type, messageID: nextMessageID(), correlationID: id,
                         body: Self.json(body), delayMilliseconds: 0)
    }

    private mutating func nextMessageID() -> String {
        sequence += 1
        return "sim-\(settings.seed)-\(sequence)"
    }

    private mutating func delay() -> Int {
        settings.maximumReplyDelayMilliseconds > 0 ? Int(random.unit() * Double(settings.maximumReplyDelayMilliseconds)) : 0
    }

    private static func json(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }

    /// The step of an `OrderStepCompleted` payload, which is stored under its type name:
    /// `{"OrderStepCompleted": {"step": {...}}}`.
    private static func step(in payload: Data) -> FulfillmentStep? {
        struct StepCompleted: Decodable { var step: FulfillmentStep }
        return try? JSONDecoder().decode([String: StepCompleted].self, from: payload)[OrderProcessEvent.TypeName.stepCompleted]?.step
    }
}

/// The request types of the travel domain that arrive as messages.
public enum TravelCapacityRequest {
    /// A provider announcing units of a hotel, flight or car: `{"resource_kind", "resource_id", "units"}`.
    public static let eventType = "TravelCapacityAnnounced"
    /// A trip to book: the body is a ``TravelBookingSaga``.
    public static let tripRequested = "TripBookingRequested"
}

/// SplitMix64: small, fast and seedable, so a simulation repeats for the same seed.
struct SimulationRandom: Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<1.
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
