// Measures the Swift AMQP client against the same work written directly in C over librabbitmq, in one run on
// one broker: publishing persistent messages with confirms (window 256) and consuming them (prefetch 256,
// one acknowledgement per message). Prints msg/s for each and the ratio Swift / C.
//
//   swift run -c release AMQPBenchmark [--messages N] [--body BYTES] [--rounds R] [--url amqp://...]
import AMQP
import CRabbitMQBaseline
import Foundation

struct Options {
    var messages = 50_000
    var body = 256
    var window = 256
    var prefetch: UInt16 = 256
    var rounds = 3
    var url = ProcessInfo.processInfo.environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"

    init(arguments: [String]) throws {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { throw BenchmarkError("\(flag) needs a value") }
            switch flag {
            case "--messages": messages = try Self.number(flag, value)
            case "--body": body = try Self.number(flag, value)
            case "--rounds": rounds = try Self.number(flag, value)
            case "--url": url = value
            default: throw BenchmarkError("unknown option \(flag)")
            }
        }
    }

    static func number(_ flag: String, _ value: String) throws -> Int {
        guard let number = Int(value), number > 0 else { throw BenchmarkError("\(flag) takes a positive whole number") }
        return number
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// CPU time this process has used so far (user + system), in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func value(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return value(usage.ru_utime) + value(usage.ru_stime)
}

/// Runs `body`, returning its msg/s and recording the client's CPU microseconds per message under `name`.
@MainActor
func measured(_ name: String, _ body: () async throws -> Double) async rethrows -> Double {
    let before = processCPUSeconds()
    let rate = try await body()
    cpu[name, default: []].append((processCPUSeconds() - before) * 1e6 / Double(options.messages))
    return rate
}

var cpu: [String: [Double]] = [:]

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

let options = try Options(arguments: CommandLine.arguments)
let configuration = try AMQPConfiguration(url: options.url)
let admin = try await AMQPConnection.connect(configuration)
let clock = ContinuousClock()
let body = Data(repeating: UInt8(ascii: "x"), count: options.body)

func freshQueue(_ label: String) async throws -> String {
    let name = "bench.\(label).\(UUID().uuidString.prefix(8))"
    try await admin.declare(QueueDeclaration(name: name, durable: true))
    return name
}

/// C: publish with a sliding confirm window.
func cPublish(_ queue: String) throws -> Double {
    let start = clock.now
    let status = baseline_publish(configuration.host, Int32(configuration.port), queue, Int32(options.messages),
                                  Int32(options.window), Int32(options.body))
    guard status == 0 else { throw BenchmarkError("C publish failed with status \(status)") }
    return Double(options.messages) / seconds(start.duration(to: clock.now))
}

/// C: consume and acknowledge one by one.
func cConsume(_ queue: String) throws -> Double {
    let start = clock.now
    let status = baseline_consume(configuration.host, Int32(configuration.port), queue, Int32(options.messages),
                                  Int32(options.prefetch))
    guard status == 0 else { throw BenchmarkError("C consume failed with status \(status)") }
    return Double(options.messages) / seconds(start.duration(to: clock.now))
}

/// Swift: `window` tasks each publishing and awaiting its confirm, so `window` confirms are outstanding.
func swiftPublish(_ queue: String) async throws -> Double {
    let connection = try await AMQPConnection.connect(configuration)
    let publisher = try await connection.makePublisher(window: options.window)
    var persistent = AMQPProperties.persistent
    persistent.contentType = "application/json"
    let properties = persistent, total = options.messages, body = body
    let start = clock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        let lanes = options.window
        for lane in 0..<lanes {
            group.addTask {
                for _ in stride(from: lane, to: total, by: lanes) {
                    try await publisher.publish(body, exchange: "", routingKey: queue, properties: properties)
                }
            }
        }
        try await group.waitForAll()
    }
    let rate = Double(options.messages) / seconds(start.duration(to: clock.now))
    await connection.close()
    return rate
}

/// Swift: batches of 64 handed over at once, four batches in flight (the outbox relay's way).
func swiftPublishBatches(_ queue: String) async throws -> Double {
    let connection = try await AMQPConnection.connect(configuration)
    let publisher = try await connection.makePublisher(window: options.window)
    var persistent = AMQPProperties.persistent
    persistent.contentType = "application/json"
    let properties = persistent, total = options.messages, body = body
    let batch = 64, lanes = max(1, options.window / batch)
    let start = clock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for lane in 0..<lanes {
            group.addTask {
                var index = lane * batch
                while index < total {
                    let count = min(batch, total - index)
                    let messages = (0..<count).map { _ in AMQPMessage(body: body, exchange: "", routingKey: queue, properties: properties) }
                    for result in await publisher.publish(contentsOf: messages) { try result.get() }
                    index += lanes * batch
                }
            }
        }
        try await group.waitForAll()
    }
    let rate = Double(options.messages) / seconds(start.duration(to: clock.now))
    await connection.close()
    return rate
}

/// Swift: consume as an AsyncSequence and acknowledge one by one.
func swiftConsume(_ queue: String) async throws -> Double {
    let connection = try await AMQPConnection.connect(configuration)
    let start = clock.now
    let consumer = try await connection.consume(queue: queue, prefetch: options.prefetch)
    var received = 0
    for try await delivery in consumer {
        try delivery.ack()
        received += 1
        if received == options.messages { break }
    }
    let rate = Double(options.messages) / seconds(start.duration(to: clock.now))
    try await consumer.cancel()
    await connection.close()
    return rate
}

print("AMQP client benchmark: \(options.messages) persistent messages of \(options.body) bytes, confirm window \(options.window), prefetch \(options.prefetch), \(options.rounds) rounds, broker \(configuration)")
var results: [String: [Double]] = [:]
for round in 1...options.rounds {
    // Alternate the order so neither side always meets a warmer broker.
    let order = round % 2 == 1 ? ["c", "swift"] : ["swift", "c"]
    for side in order {
        if side == "c" {
            let queue = try await freshQueue("c")
            results["C publish", default: []].append(try await measured("C publish") { try cPublish(queue) })
            results["C consume", default: []].append(try await measured("C consume") { try cConsume(queue) })
            try await admin.deleteQueue(queue)
        } else {
            let queue = try await freshQueue("swift")
            results["Swift publish", default: []].append(try await measured("Swift publish") { try await swiftPublish(queue) })
            results["Swift consume", default: []].append(try await measured("Swift consume") { try await swiftConsume(queue) })
            results["Swift publish (batches)", default: []].append(try await measured("Swift publish (batches)") { try await swiftPublishBatches(queue) })
            _ = try await admin.purgeQueue(queue)
            try await admin.deleteQueue(queue)
        }
    }
    print("round \(round) done")
}

@MainActor func row(_ name: String) -> String {
    let values = results[name]!
    let cpuPerMessage = median(cpu[name] ?? [0])
    return "\(name.padding(toLength: 24, withPad: " ", startingAt: 0)) median \(Int(median(values))) msg/s  client CPU \(String(format: "%.1f", cpuPerMessage)) us/msg  (rounds: \(values.map { String(Int($0)) }.joined(separator: ", ")))"
}
for name in ["C publish", "Swift publish", "Swift publish (batches)", "C consume", "Swift consume"] { print(row(name)) }
let publishRatio = median(results["Swift publish"]!) / median(results["C publish"]!)
let batchRatio = median(results["Swift publish (batches)"]!) / median(results["C publish"]!)
let consumeRatio = median(results["Swift consume"]!) / median(results["C consume"]!)
print(String(format: "ratio Swift/C publish: %.2f   publish (batches): %.2f   consume: %.2f   (target >= 0.90)", publishRatio, batchRatio, consumeRatio))
await admin.close()
