import EventCore
import Processes

/// A trip: a hotel room, a flight seat and a rental car, booked in that order or not at all. A failed
/// booking cancels the ones made before it, newest first.
public struct TravelBookingSaga: SagaDefinition, Hashable {
    /// One booking of the trip.
    public struct Booking: Sendable, Hashable, Codable {
        /// The hotel, flight or rental station.
        public var resourceID: String
        /// The booking's id.
        public var bookingID: String

        /// Creates the value.
        public init(resourceID: String, bookingID: String) {
            self.resourceID = resourceID
            self.bookingID = bookingID
        }
    }

    /// `travel-booking`.
    public static let sagaType = "travel-booking"

    /// The trip.
    public var tripID: String
    /// The hotel booking.
    public var hotel: Booking
    /// The flight booking.
    public var flight: Booking
    /// The car booking.
    public var car: Booking
    /// How a failing cancellation is retried before the saga needs attention.
    public var retryPolicy: RetryPolicy

    /// Creates the saga.
    public init(
        tripID: String, hotel: Booking, flight: Booking, car: Booking,
        retryPolicy: RetryPolicy = RetryPolicy(maxRetries: 3, backoff: .exponential(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(5)), jitter: 0)
    ) {
        self.tripID = tripID
        self.hotel = hotel
        self.flight = flight
        self.car = car
        self.retryPolicy = retryPolicy
    }

    /// The trip.
    public var businessID: String { tripID }

    /// The step names, in order.
    public static let stepNames = ["book_hotel", "book_flight", "book_car"]

    /// book_hotel / cancel, book_flight / cancel, book_car / cancel.
    ///
    /// Ids were validated when the saga was created (``validate()``); a step whose id no longer forms a stream
    /// id fails with that error when it runs.
    public func steps() -> [SagaStep] {
        [
            step(TravelBookingSaga.stepNames[0], { try BookHotel(hotelID: hotel.resourceID, bookingID: hotel.bookingID) }, { try CancelHotel(hotelID: hotel.resourceID, bookingID: hotel.bookingID) }),
            step(TravelBookingSaga.stepNames[1], { try BookFlight(flightID: flight.resourceID, bookingID: flight.bookingID) }, { try CancelFlight(flightID: flight.resourceID, bookingID: flight.bookingID) }),
            step(TravelBookingSaga.stepNames[2], { try BookCar(stationID: car.resourceID, bookingID: car.bookingID) }, { try CancelCar(stationID: car.resourceID, bookingID: car.bookingID) }),
        ]
    }

    /// Checks that every resource id makes a valid stream id and the trip id a valid saga id.
    public func validate() throws(EventStoreError) {
        _ = try Self.sagaID(for: tripID)
        _ = try TravelResourceKind.hotel.stream(hotel.resourceID)
        _ = try TravelResourceKind.flight.stream(flight.resourceID)
        _ = try TravelResourceKind.car.stream(car.resourceID)
    }

    private func step<Book: Command, Cancel: Command>(
        _ name: String, _ book: () throws -> Book, _ cancel: () throws -> Cancel
    ) -> SagaStep {
        do {
            return SagaStep(name: name, command: try book(), compensation: try cancel())
        } catch {
            return SagaStep(name: name, command: RefusedCommand(error: error), compensation: RefusedCommand(error: error))
        }
    }
}

/// A command that refuses with the error it was made with: the step of a saga whose ids are invalid.
struct RefusedCommand: Command {
    let error: any Error
    var readStreams: [StreamID] { [] }
    var initialState: TravelInventory { TravelInventory() }
    func apply(_ state: inout TravelInventory, _ event: TravelResourceEvent) {}
    func handle(_ state: TravelInventory, context: CommandContext) throws -> [StreamWrite<TravelResourceEvent>] {
        throw error
    }
}
