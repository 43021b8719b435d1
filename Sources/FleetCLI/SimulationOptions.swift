import ArgumentParser
import OrderFulfillment

/// The simulator's settings as flags.
struct SimulationOptions: ParsableArguments {
    @Option(help: "Orders to place.") var orders: Int = 200
    @Option(help: "Trips to book.") var trips: Int = 40
    @Option(help: "Share of payments declined.") var paymentFailureRate: Double = 0.05
    @Option(help: "Share of orders without stock.") var inventoryFailureRate: Double = 0.05
    @Option(help: "Share of shipments failing.") var shipmentFailureRate: Double = 0.03
    @Option(help: "Share of orders where a service never answers (ended by timeouts).") var lostReplyRate: Double = 0.03
    @Option(help: "Share of replies sent twice.") var duplicateRate: Double = 0.05
    @Option(help: "Share of trips with a sold-out flight.") var soldOutFlightRate: Double = 0.15
    @Option(help: "Share of trips with a sold-out car.") var soldOutCarRate: Double = 0.1
    @Option(help: "Unprocessable messages sent on purpose.") var poisonMessages: Int = 5
    @Option(help: "Slowest service reply, in milliseconds.") var maximumReplyDelay: Int = 50
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 42
    @Option(help: "Seconds to wait for every process to end.") var timeout: Int = 300
    @Option(help: "Orders and trips opened per second (0 = all at once).") var openingsPerSecond: Int = 0

    var settings: SimulationSettings {
        var settings = SimulationSettings()
        settings.orders = orders
        settings.trips = trips
        settings.paymentFailureRate = paymentFailureRate
        settings.inventoryFailureRate = inventoryFailureRate
        settings.shipmentFailureRate = shipmentFailureRate
        settings.lostReplyRate = lostReplyRate
        settings.duplicateRate = duplicateRate
        settings.soldOutFlightRate = soldOutFlightRate
        settings.soldOutCarRate = soldOutCarRate
        settings.poisonMessages = poisonMessages
        settings.maximumReplyDelayMilliseconds = maximumReplyDelay
        settings.seed = seed
        settings.openingsPerSecond = openingsPerSecond
        return settings
    }

    func validate() throws {
        guard orders >= 0, trips >= 0, poisonMessages >= 0 else { throw ValidationError("counts cannot be negative") }
        for (name, rate) in [("payment-failure-rate", paymentFailureRate), ("inventory-failure-rate", inventoryFailureRate),
                             ("shipment-failure-rate", shipmentFailureRate), ("lost-reply-rate", lostReplyRate),
                             ("duplicate-rate", duplicateRate), ("sold-out-flight-rate", soldOutFlightRate), ("sold-out-car-rate", soldOutCarRate)]
        where !(0...1).contains(rate) {
            throw ValidationError("--\(name) must be between 0 and 1")
        }
        guard paymentFailureRate + inventoryFailureRate + shipmentFailureRate + lostReplyRate <= 1 else {
            throw ValidationError("the order failure rates add up to more than 1")
        }
        guard soldOutFlightRate + soldOutCarRate <= 1 else { throw ValidationError("the sold-out rates add up to more than 1") }
    }
}
