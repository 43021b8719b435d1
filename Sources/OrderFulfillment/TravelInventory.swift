import EventCore

/// What a travel provider can sell: rooms of a hotel, seats of a flight, cars of a rental station. Each
/// resource is a stream (`hotel-<id>`, `flight-<id>`, `car-<id>`) of these events.
public enum TravelResourceEvent: DomainEvent, Hashable {
    /// More units can be booked.
    case capacityAdded(units: Int)
    /// A unit was booked.
    case booked(bookingID: String)
    /// A booking was cancelled; its unit is free again.
    case bookingCancelled(bookingID: String)
    /// Bookings can no longer be cancelled (the flight left, the stay began).
    case cancellationsClosed
    /// Bookings can be cancelled again.
    case cancellationsReopened

    /// `TravelCapacityAdded`, `TravelBooked`, `TravelBookingCancelled`, `TravelCancellationsClosed`,
    /// `TravelCancellationsReopened`.
    public var eventType: String {
        switch self {
        case .capacityAdded: "TravelCapacityAdded"
        case .booked: "TravelBooked"
        case .bookingCancelled: "TravelBookingCancelled"
        case .cancellationsClosed: "TravelCancellationsClosed"
        case .cancellationsReopened: "TravelCancellationsReopened"
        }
    }

    /// The four travel type names.
    public static func handles(eventType: String) -> Bool {
        ["TravelCapacityAdded", "TravelBooked", "TravelBookingCancelled", "TravelCancellationsClosed", "TravelCancellationsReopened"].contains(eventType)
    }
}

/// The kinds of travel resource.
public enum TravelResourceKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// Hotel rooms.
    case hotel
    /// Flight seats.
    case flight
    /// Rental cars.
    case car

    /// The stream of resource `id`: `<kind>-<id>`.
    public func stream(_ id: String) throws(EventStoreError) -> StreamID {
        try StreamID("\(rawValue)-\(id)")
    }
}

/// A resource's units and bookings, folded from its stream.
public struct TravelInventory: Sendable, Hashable {
    /// Units ever added.
    public var capacity = 0
    /// Bookings not cancelled.
    public var activeBookings: Set<String> = []
    /// Bookings cancelled.
    public var cancelledBookings: Set<String> = []
    /// Whether cancellations are refused.
    public var cancellationsClosed = false

    /// Nothing added yet.
    public init() {}

    /// Units still free.
    public var available: Int { capacity - activeBookings.count }

    /// Folds one event.
    public mutating func apply(_ event: TravelResourceEvent) {
        switch event {
        case .capacityAdded(let units): capacity += units
        case .booked(let id): activeBookings.insert(id)
        case .bookingCancelled(let id):
            activeBookings.remove(id)
            cancelledBookings.insert(id)
        case .cancellationsClosed: cancellationsClosed = true
        case .cancellationsReopened: cancellationsClosed = false
        }
    }
}

/// Why a travel provider refused.
public struct TravelRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// The reason.
    public var reason: String

    /// Creates a refusal.
    public init(_ reason: String) { self.reason = reason }

    /// The reason.
    public var description: String { reason }
}

/// A command on one travel resource stream.
public protocol TravelResourceCommand: Command where State == TravelInventory, Event == TravelResourceEvent {
    /// The resource stream.
    var resource: StreamID { get }
}

extension TravelResourceCommand {
    /// The resource stream.
    public var readStreams: [StreamID] { [resource] }
    /// Nothing known.
    public var initialState: TravelInventory { TravelInventory() }
    /// Folds into the inventory.
    public func apply(_ state: inout TravelInventory, _ event: TravelResourceEvent) { state.apply(event) }
}

/// A command that books one unit of a resource.
public protocol TravelReservation: TravelResourceCommand {
    /// The booking.
    var bookingID: String { get }
}

extension TravelReservation {
    /// Books a unit; nothing if the booking exists; refuses when none is free or the booking was cancelled.
    public func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        if state.activeBookings.contains(bookingID) { return [] }
        if state.cancelledBookings.contains(bookingID) { throw TravelRefusal("booking \(bookingID) was cancelled") }
        guard state.available > 0 else { throw TravelRefusal("\(resource) has no unit left") }
        return [try context.write(.booked(bookingID: bookingID), to: resource)]
    }
}

/// A command that cancels one booking of a resource.
public protocol TravelCancellation: TravelResourceCommand {
    /// The booking.
    var bookingID: String { get }
}

extension TravelCancellation {
    /// Cancels the booking; nothing if it is not active; refuses once cancellations are closed.
    public func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        guard state.activeBookings.contains(bookingID) else { return [] }
        guard !state.cancellationsClosed else { throw TravelRefusal("\(resource) no longer accepts cancellations") }
        return [try context.write(.bookingCancelled(bookingID: bookingID), to: resource)]
    }
}

/// Books a hotel room.
public struct BookHotel: TravelReservation {
    /// The hotel's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(hotelID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.hotel.stream(hotelID)
        self.bookingID = bookingID
    }
}

/// Cancels a hotel room.
public struct CancelHotel: TravelCancellation {
    /// The hotel's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(hotelID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.hotel.stream(hotelID)
        self.bookingID = bookingID
    }
}

/// Books a flight seat.
public struct BookFlight: TravelReservation {
    /// The flight's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(flightID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.flight.stream(flightID)
        self.bookingID = bookingID
    }
}

/// Cancels a flight seat.
public struct CancelFlight: TravelCancellation {
    /// The flight's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(flightID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.flight.stream(flightID)
        self.bookingID = bookingID
    }
}

/// Books a rental car.
public struct BookCar: TravelReservation {
    /// The rental station's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(stationID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.car.stream(stationID)
        self.bookingID = bookingID
    }
}

/// Cancels a rental car.
public struct CancelCar: TravelCancellation {
    /// The rental station's stream.
    public let resource: StreamID
    /// The booking.
    public let bookingID: String

    /// Creates the command.
    public init(stationID: String, bookingID: String) throws(EventStoreError) {
        resource = try TravelResourceKind.car.stream(stationID)
        self.bookingID = bookingID
    }
}

/// Adds units to a resource (the provider's side; tests and the demo use it to stock resources).
public struct AddTravelCapacity: TravelResourceCommand {
    /// The resource's stream.
    public let resource: StreamID
    /// How many units.
    public let units: Int

    /// Creates the command.
    public init(_ kind: TravelResourceKind, id: String, units: Int) throws(EventStoreError) {
        resource = try kind.stream(id)
        self.units = units
    }

    /// Adds the units (nothing for 0 or fewer).
    public func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        units > 0 ? [try context.write(.capacityAdded(units: units), to: resource)] : []
    }
}

/// Closes cancellations of a resource (the provider's side).
public struct CloseTravelCancellations: TravelResourceCommand {
    /// The resource's stream.
    public let resource: StreamID

    /// Creates the command.
    public init(_ kind: TravelResourceKind, id: String) throws(EventStoreError) {
        resource = try kind.stream(id)
    }

    /// Closes cancellations once.
    public func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        state.cancellationsClosed ? [] : [try context.write(.cancellationsClosed, to: resource)]
    }
}

/// Opens cancellations of a resource again (the provider's side).
public struct ReopenTravelCancellations: TravelResourceCommand {
    /// The resource's stream.
    public let resource: StreamID

    /// Creates the command.
    public init(_ kind: TravelResourceKind, id: String) throws(EventStoreError) {
        resource = try kind.stream(id)
    }

    /// Reopens cancellations if they are closed.
    public func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        state.cancellationsClosed ? [try context.write(.cancellationsReopened, to: resource)] : []
    }
}
