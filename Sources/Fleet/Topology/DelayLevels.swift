import AMQP

/// Binary delay levels on the broker, without any plugin.
///
/// Level n is a topic exchange and a queue whose messages all wait 2^n seconds (one per-queue TTL, so no
/// message waits behind a longer one). A delayed message's routing key spells the delay in binary, highest
/// level first, followed by its destination queue: `1.0.1.<...>.fleet.timeouts`. Level n's exchange sends it
/// to level n's queue when its bit is 1, or straight on to level n-1's exchange when it is 0; each queue
/// dead-letters to the next level's exchange, and level 0 to the delivery exchange, which routes by the
/// destination. With 21 levels a delay can reach 2^21 - 1 seconds (24 days).
public struct DelayLevels: Sendable, Equatable, Codable {
    /// How many levels (level 0 waits 1 s, level `levels - 1` waits 2^(levels-1) s).
    public var levels: Int
    /// Prefix of the level exchanges and queues: `<prefix>.level-N` and `<prefix>.level-N.wait`.
    public var prefix: String
    /// The exchange that hands due messages to their destination queue.
    public var deliveryExchange: String
    /// The queues delayed messages may be addressed to.
    public var destinations: [String]

    enum CodingKeys: String, CodingKey {
        case levels, prefix, deliveryExchange = "delivery_exchange", destinations
    }

    /// Delay levels.
    public init(levels: Int = 21, prefix: String = "fleet.delay", deliveryExchange: String = "fleet.delay.deliver", destinations: [String]) {
        self.levels = levels
        self.prefix = prefix
        self.deliveryExchange = deliveryExchange
        self.destinations = destinations
    }

    /// The longest delay the levels can carry, in seconds.
    public var maximumDelaySeconds: Int { (1 << levels) - 1 }

    /// The exchange of level `level`.
    public func exchangeName(level: Int) -> String { "\(prefix).level-\(level)" }

    /// The waiting queue of level `level`.
    public func queueName(level: Int) -> String { "\(prefix).level-\(level).wait" }

    /// The exchange of the highest level: a message published there with any delay's routing key finds its way.
    public var entryExchange: String { exchangeName(level: levels - 1) }

    /// The exchange a message delayed by `seconds` is published to: the level of its delay's highest bit (the
    /// levels above it would only pass it on), or the delivery exchange for no delay. Routing a message
    /// through fewer exchanges makes publishing into the levels cheaper for the broker.
    public func entryExchange(delaySeconds seconds: Int) -> String {
        let delay = min(max(0, seconds), maximumDelaySeconds)
        guard delay > 0 else { return deliveryExchange }
        return exchangeName(level: Int.bitWidth - 1 - delay.leadingZeroBitCount)
    }

    /// The delay a routing key of ``routingKey(delaySeconds:destination:)`` spells; nil for another key.
    public func delaySeconds(routingKey: String) -> Int? {
        var seconds = 0, words = 0
        for word in routingKey.split(separator: ".", maxSplits: levels, omittingEmptySubsequences: false).prefix(levels) {
            switch word {
            case "0": seconds <<= 1
            case "1": seconds = seconds << 1 | 1
            default: return nil
            }
            words += 1
        }
        return words == levels ? seconds : nil
    }

    /// Where to publish a message that waits `seconds` on the levels and is then delivered to `destination`.
    public func address(delaySeconds seconds: Int, destination: String) -> (exchange: String, routingKey: String) {
        (entryExchange(delaySeconds: seconds), routingKey(delaySeconds: seconds, destination: destination))
    }

    /// How many waiting queues a message delayed by `seconds` passes through (each costs a dead-lettering hop).
    public func hops(delaySeconds seconds: Int) -> Int {
        min(max(0, seconds), maximumDelaySeconds).nonzeroBitCount
    }

    /// The routing key that delays a message by `seconds` (clamped to the levels' range) and then delivers it
    /// to `destination`.
    public func routingKey(delaySeconds seconds: Int, destination: String) -> String {
        let delay = min(max(0, seconds), maximumDelaySeconds)
        var words: [String] = []
        words.reserveCapacity(levels + 1)
        for level in stride(from: levels - 1, through: 0, by: -1) {
            words.append(delay & (1 << level) != 0 ? "1" : "0")
        }
        words.append(destination)
        return words.joined(separator: ".")
    }

    /// The exchanges, queues and bindings the levels consist of.
    public func entities(virtualHost: String) -> (exchanges: [Topology.Exchange], queues: [Topology.Queue], bindings: [Topology.Binding]) {
        var exchanges: [Topology.Exchange] = []
        var queues: [Topology.Queue] = []
        var bindings: [Topology.Binding] = []
        for level in stride(from: levels - 1, through: 0, by: -1) {
            exchanges.append(.init(name: exchangeName(level: level), vhost: virtualHost, type: "topic"))
            let next = level == 0 ? deliveryExchange : exchangeName(level: level - 1)
            queues.append(.init(name: queueName(level: level), vhost: virtualHost, arguments: [
                "x-queue-type": "quorum",
                "x-message-ttl": .int64(Int64(1 << level) * 1000),
                "x-dead-letter-exchange": .string(next),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            ]))
            let before = Array(repeating: "*", count: levels - 1 - level)
            let pattern = { (bit: String) in (before + [bit, "#"]).joined(separator: ".") }
            bindings.append(.init(source: exchangeName(level: level), vhost: virtualHost, destination: queueName(level: level),
                                  destinationType: .queue, routingKey: pattern("1")))
            bindings.append(.init(source: exchangeName(level: level), vhost: virtualHost, destination: next,
                                  destinationType: .exchange, routingKey: pattern("0")))
        }
        exchanges.append(.init(name: deliveryExchange, vhost: virtualHost, type: "topic"))
        let allLevels = Array(repeating: "*", count: levels).joined(separator: ".")
        for destination in destinations {
            bindings.append(.init(source: deliveryExchange, vhost: virtualHost, destination: destination,
                                  destinationType: .queue, routingKey: "\(allLevels).\(destination)"))
        }
        return (exchanges, queues, bindings)
    }
}
