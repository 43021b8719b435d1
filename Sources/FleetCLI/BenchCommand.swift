import AMQP
import ArgumentParser
import EventCore
import EventStorePostgres
import Fleet
import FleetSimulation
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Histogram
import Logging
import OrderFulfillment
import PostgresNIO

/// `fleet bench`: the whole fleet measured against the ceilings of this machine, in one run.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the fleet on a fixed workload, next to the broker's and the store's ceilings on this machine.",
        discussion: """
            For each store and worker count: a fresh store, the fleet's queues purged, the workers started, and the \
            simulated services' workload (orders through every step, bookings with compensations, lost replies \
            ended by timeouts) run through them. Reported: process events committed per second, the latency \
            from a service's message to the first process event it causes (HDR histogram: p50, p90, p99, max), \
            conflicts retried, and the workers' resident memory at start and end. In the same run, the ceilings: \
            the broker path alone (consume, publish with confirm, acknowledge, through the project's AMQP module, \
            no store) and the store path alone (pgbench's two-insert transactions for PostgreSQL; the same \
            append shape straight on the SQLite store), and the ratio fleet / min(ceilings). It purges the \
            fleet's queues of the broker it is pointed at.
            """
    )

    @Option(help: "Stores to measure: sqlite, postgres (comma-separated).") var stores: String = "sqlite,postgres"
    @Option(help: "Worker counts to measure (comma-separated).") var workers: String = "1,2,4"
    @Option(help: "Broker URL.") var amqpURL: String = ProcessInfo.processInfo.environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "PostgreSQL server for the postgres runs (each run gets a schema of its own).")
    var postgresURL: String = ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet"
    @Option(help: "Topology file.") var topology: String = "topology.json"
    @Option(help: "Folder for SQLite stores and the workers' logs.") var directory: String = ".fleet-bench"
    @Option(help: "Orders per run.") var orders: Int = 1000
    @Option(help: "Trips per run.") var trips: Int = 200
    @Option(help: "Orders and trips opened per second (0 = as fast as the broker takes them).") var rate: Int = 0
    @Option(help: "Messages through the broker-path ceiling.") var ceilingMessages: Int = 20000
    @Option(help: "Messages handled at once per worker (as FLEET_CONCURRENCY).") var concurrency: Int = WorkerConfiguration().concurrency
    @Option(help: "Seconds an order step may take before its timeout fires (a backlog must not outlast it).") var stepTimeout: Int = 30
    @Option(help: "Instead of fleet runs: schedule this many timeouts through the delay levels at once and measure their lateness.")
    var timeouts: Int = 0
    @Option(help: "Seconds over which those timeouts fall due (from 1 s on).") var timeoutSpread: Int = 600
    @Flag(help: "With --timeouts: every other timeout takes the plain way (its delay rounded up to whole seconds, not held), reported apart.")
    var timeoutBaseline = false
    @Option(help: "Also write the results as JSON to this file.") var json: String?

    func validate() throws {
        guard orders >= 0, trips >= 0, orders + trips > 0 else { throw ValidationError("--orders and --trips must leave some work") }
        guard !workerCounts.isEmpty, workerCounts.allSatisfy({ (1...16).contains($0) }) else { throw ValidationError("--workers takes counts from 1 to 16") }
        guard !storeKinds.isEmpty, storeKinds.allSatisfy({ ["sqlite", "postgres"].contains($0) }) else { throw ValidationError("--stores takes sqlite and postgres") }
        guard ceilingMessages >= 100 else { throw ValidationError("--ceiling-messages must be at least 100") }
        guard timeouts >= 0, (2...86_400).contains(timeoutSpread) else { throw ValidationError("--timeouts cannot be negative; --timeout-spread takes 2 to 86400 seconds") }
    }

    var workerCounts: [Int] { workers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    var storeKinds: [String] { stores.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    /// One line of the results.
    struct Result: Codable {
        var store: String
        var workers: Int
        var processes: Int
        var processesEndedAsExpected: Bool
        var seconds: Double
        var processEvents: Int
        /// Distinct process events per second until 95% of them had arrived (the last processes wait out their
        /// timeouts, which says nothing of throughput).
        var processEventsPerSecond: Double
        var latencySamples: Int
        var latencyMilliseconds: [String: Double]
        var conflictsRetried: Int
        var residentMemoryStartMiB: [Double]
        var residentMemoryEndMiB: [Double]
        /// After the run, once every worker gave back what it keeps for speed (``BenchCommand/idleRelease`` s without
        /// a message).
        var residentMemoryIdleMiB: [Double]
        /// The workers' summed resident memory every five seconds of the run (the soak's view), in MiB.
        var residentMemorySamplesMiB: [Double]
        /// Process events that arrived in each second of the run: where the run was busy and where it waited.
        var processEventsEachSecond: [Int]
        var brokerCeilingPerSecond: Double
        var storeCeilingPerSecond: Double
        var ratio: Double
    }

    func run() async throws {
        let topology = try Topology.loadForCommand(self.topology)
        var logger = Logger(label: "fleet.bench")
        logger.logLevel = .warning
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let admin = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        try await topology.declare(on: admin)
        if timeouts > 0 {
            try await measureTimeouts(topology: topology, admin: admin)
            return
        }
        say("fleet bench: \(orders) orders and \(trips) trips per run, \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(Self.loadAverage())")

        let brokerCeiling = try await BrokerCeiling.measure(connection: admin, messages: ceilingMessages, concurrency: concurrency)
        say(String(format: "broker path alone (consume, publish with confirm, ack; no store): %.0f messages/s", brokerCeiling))

        var results: [Result] = []
        say("store      workers  processes  seconds  events/s   p50 ms   p90 ms   p99 ms   max ms  conflicts  RSS MiB start→end→idle  store ceiling  ratio")
        for kind in storeKinds {
            for count in workerCounts {
                let (storeURL, cleanup) = try await prepareStore(kind)
                let storeCeiling = try await measureStoreCeiling(kind: kind, storeURL: storeURL, concurrency: concurrency * count)
                let result = try await runFleet(kind: kind, workers: count, storeURL: storeURL, topology: topology, admin: admin,
                                                brokerCeiling: brokerCeiling, storeCeiling: storeCeiling, logger: logger)
                await cleanup()
                results.append(result)
                say(Self.line(result))
            }
        }
        await admin.close()
        say("load at the end: \(Self.loadAverage())")
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        }
        if results.contains(where: { !$0.processesEndedAsExpected }) {
            say("some processes did not end as expected; see \(directory)/*.log")
            throw ExitCode(1)
        }
    }

    /// `--timeouts N`: the delay levels' precision with N timeouts pending at once.
    func measureTimeouts(topology: Topology, admin: AMQPConnection) async throws {
        say("fleet bench: \(timeouts) timeouts due over 1 to \(timeoutSpread) s, all pending at once; load \(Self.loadAverage())")
        let report = try await TimeoutPrecision.measure(connection: admin, topology: topology, count: timeouts, spread: timeoutSpread,
                                                        baseline: timeoutBaseline)
        await admin.close()
        say(String(format: "published in %.1f s", report.publishSeconds))
        func line(_ name: String, scheduled: Int, received: Int, early: Int, lateness: [String: Double], extra: String) {
            say(String(format: "%@: scheduled %d, received %d, early %d; lateness p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms%@",
                       name, scheduled, received, early,
                       lateness["p50"] ?? 0, lateness["p90"] ?? 0, lateness["p99"] ?? 0, lateness["max"] ?? 0, extra))
        }
        line("fleet (routed to arrive early, held until due)", scheduled: report.scheduled, received: report.received, early: report.early,
             lateness: report.latenessMilliseconds, extra: String(format: "; held %d, sent back %d; a hop costs %.0f ms", report.held, report.sentBack, report.hopCostMilliseconds))
        if let plain = report.baseline {
            line("plain (rounded up to whole seconds, not held)", scheduled: plain.scheduled, received: plain.received, early: plain.early,
                 lateness: plain.latenessMilliseconds, extra: "")
            let fleetP99 = report.latenessMilliseconds["p99"] ?? 0, plainP99 = plain.latenessMilliseconds["p99"] ?? 0
            if fleetP99 > 0 { say(String(format: "p99 lateness, plain / fleet: %.1f", plainP99 / fleetP99)) }
        }
        say("load at the end: \(Self.loadAverage())")
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if report.received != report.scheduled || report.early > 0 { throw ExitCode(1) }
        if let plain = report.baseline, plain.received != plain.scheduled || plain.early > 0 { throw ExitCode(1) }
    }

    static func line(_ result: Result) -> String {
        let rss = zip(zip(result.residentMemoryStartMiB, result.residentMemoryEndMiB), result.residentMemoryIdleMiB)
            .map { String(format: "%.0f→%.0f→%.0f", $0.0, $0.1, $1) }.joined(separator: " ")
        return String(format: "%-10@ %7d %10d %8.1f %9.0f %8.1f %8.1f %8.1f %8.1f %10d  %-20@ %13.0f %6.2f",
                      result.store as NSString, result.workers, result.processes, result.seconds, result.processEventsPerSecond,
                      result.latencyMilliseconds["p50"] ?? 0, result.latencyMilliseconds["p90"] ?? 0, result.latencyMilliseconds["p99"] ?? 0,
                      result.latencyMilliseconds["max"] ?? 0, result.conflictsRetried, rss as NSString, result.storeCeilingPerSecond, result.ratio)
    }

    /// The workers' `FLEET_IDLE_RELEASE_SECONDS` in a bench: the idle resident memory is sampled once each worker
    /// has been that long without a message after a run.
    static let idleRelease = 5

    // MARK: - One fleet run

    func runFleet(kind: String, workers count: Int, storeURL: String, topology: Topology, admin: AMQPConnection,
                  brokerCeiling: Double, storeCeiling: Double, logger: Logger) async throws -> Result {
        for queue in topology.queues where queue.queueType != "stream" { _ = try await admin.purgeQueue(queue.name) }
        let firstPort = Int.random(in: 20_000..<32_000)  // below the kernel's ephemeral ports (32768 on)
        let fleet = try LocalFleet(count: count, storeURL: storeURL, topologyPath: self.topology, amqpURL: amqpURL, directory: directory,
                                   name: "bench-\(kind)-\(count)", orderStepTimeout: stepTimeout, orderDeadline: 900, firstHTTPPort: firstPort,
                                   concurrency: concurrency, idleReleaseSeconds: Self.idleRelease)
        try await fleet.waitUntilReady(admin: admin, topology: topology)
        let memoryAtStart = fleet.residentMemory()

        var settings = SimulationSettings()
        settings.orders = orders
        settings.trips = trips
        settings.openingsPerSecond = rate
        settings.poisonMessages = 0
        settings.maximumReplyDelayMilliseconds = 0
        let sampler = MemorySampler(fleet: fleet)
        let report = try await SimulationDriver.run(settings: settings, topology: topology, amqpURL: amqpURL, timeout: .seconds(86_400), logger: logger) { _, _ in
            sampler.sampleIfDue()
        }
        let memoryAtEnd = fleet.residentMemory()
        var conflicts = 0
        for port in fleet.httpPorts { conflicts += await Self.counter("fleet_conflicts_retried_total", port: port) }
        // Idle: once no message has come for a while (late timeouts of steps done long ago may still arrive), each
        // worker gives back its stream cache and the allocator's free pages.
        var releases: [Int] = []
        for port in fleet.httpPorts { releases.append(await Self.counter("fleet_idle_releases_total", port: port)) }
        let idleBy = ContinuousClock.now + .seconds(stepTimeout + 4 * Self.idleRelease)
        while ContinuousClock.now < idleBy {
            var released = true
            for (port, before) in zip(fleet.httpPorts, releases) where await Self.counter("fleet_idle_releases_total", port: port) <= before {
                released = false
            }
            if released { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let memoryWhenIdle = fleet.residentMemory()
        await fleet.stop()

        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        for seconds in report.eventLatencies { _ = histogram.record(UInt64(max(1, seconds * 1_000_000))) }
        func milliseconds(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
        let seconds = report.elapsed.seconds
        let events = report.distinctProcessEvents.values.reduce(0, +)
        let busy = report.eventArrivals.isEmpty ? 0 : Int((Double(report.eventArrivals.count) * 0.95).rounded(.up)) - 1
        let perSecond = report.eventArrivals.isEmpty ? 0 : Double(busy + 1) / max(report.eventArrivals[busy], 0.001)
        for (id, mismatch) in report.mismatches.prefix(5) {
            say("  \(id): expected \(mismatch.expected.rawValue), observed \(mismatch.observed?.rawValue ?? "nothing")")
        }
        let mebibytes = { (bytes: [Int]) in bytes.map { Double($0) / 1_048_576 } }
        return Result(
            store: kind, workers: count, processes: report.processes, processesEndedAsExpected: report.finished && report.mismatches.isEmpty,
            seconds: seconds, processEvents: events, processEventsPerSecond: perSecond, latencySamples: report.eventLatencies.count,
            latencyMilliseconds: ["p50": milliseconds(50), "p90": milliseconds(90), "p99": milliseconds(99), "max": Double(histogram.maxRecorded) / 1000],
            conflictsRetried: conflicts, residentMemoryStartMiB: mebibytes(memoryAtStart), residentMemoryEndMiB: mebibytes(memoryAtEnd),
            residentMemoryIdleMiB: mebibytes(memoryWhenIdle),
            residentMemorySamplesMiB: sampler.samples.map { Double($0) / 1_048_576 },
            processEventsEachSecond: report.eventArrivals.reduce(into: [Int]()) { counts, arrival in
                let second = max(0, Int(arrival))
                if counts.count <= second { counts.append(contentsOf: repeatElement(0, count: second + 1 - counts.count)) }
                counts[second] += 1
            },
            brokerCeilingPerSecond: brokerCeiling, storeCeilingPerSecond: storeCeiling, ratio: perSecond / max(1, min(brokerCeiling, storeCeiling))
        )
    }

    /// A fresh store: a new SQLite file, or a new schema on the PostgreSQL server.
    func prepareStore(_ kind: String) async throws -> (String, @Sendable () async -> Void) {
        let name = "bench_\(UInt32.random(in: 0...UInt32.max))"
        if kind == "sqlite" {
            let path = "\(directory)/\(name).sqlite"
            return (path, { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } })
        }
        let separator = postgresURL.contains("?") ? "&" : "?"
        let url = postgresURL + "\(separator)schema=\(name)"
        let base = postgresURL
        return (url, {
            guard let configuration = try? PostgresURL.clientConfiguration(base) else { return }
            let client = PostgresClient(configuration: configuration)
            let running = await client.startRunning()
            _ = try? await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(name)\" CASCADE"))
            running.cancel()
        })
    }

    /// The store path alone, at the fleet's concurrency: pgbench's two-insert transactions for PostgreSQL; for
    /// SQLite, appends of the fleet's shape (one event with an idempotency key) straight on the store.
    func measureStoreCeiling(kind: String, storeURL: String, concurrency: Int) async throws -> Double {
        if kind == "postgres" {
            let client = PostgresClient(configuration: try PostgresURL.clientConfiguration(postgresURL))
            let running = await client.startRunning()
            defer { running.cancel() }
            return try await PgBench.twoInsertTransactions(client: client, url: postgresURL, concurrency: min(concurrency, 32), seconds: 5, expectedRate: 2000)
        }
        let connection = try await StoreConnection.open(storeURL, maximumPayloadBytes: 1 << 20, logger: Logger(label: "fleet.bench"))
        defer { Task { await connection.close() } }
        let store = connection.store
        let appends = 2000
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<min(concurrency, 32) {
                group.addTask {
                    var index = task
                    while index < appends {
                        let stream = try StreamID("ceiling-\(index)")
                        let event = NewEvent(streamID: stream, eventType: "CeilingMeasured", payload: Data(#"{"order_id":"ceiling"}"#.utf8))
                        _ = try await store.append(AppendRequest(events: [event], expectations: [stream: .noStream],
                                                                 idempotencyKey: try IdempotencyKey("ceiling-\(index)")))
                        index += min(concurrency, 32)
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = started.duration(to: .now)
        return Double(appends) / elapsed.seconds
    }

    /// A counter's value from a worker's `/metrics` (summed over its label sets); 0 when unreachable.
    static func counter(_ name: String, port: Int) async -> Int {
        guard let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
              let (data, _) = try? await URLSession.shared.data(from: url) else { return 0 }
        var total = 0.0
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name) {
            total += Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return Int(total)
    }

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.map(String.init) ?? "unknown"
    }
}

/// The workers' summed resident memory, sampled every five seconds from the simulator's progress callback.
///
/// Unchecked because `LocalFleet` holds `Process` objects; the sampler only reads their ids, under its lock.
final class MemorySampler: @unchecked Sendable {
    private let fleet: LocalFleet
    private let lock = NSLock()
    private var last = ContinuousClock.now
    private var taken: [Int] = []

    init(fleet: LocalFleet) {
        self.fleet = fleet
        taken.append(fleet.residentMemory().reduce(0, +))
    }

    /// The samples so far, in bytes.
    var samples: [Int] { lock.withLock { taken } }

    /// Takes a sample when five seconds have passed since the last one.
    func sampleIfDue() {
        lock.withLock {
            guard last.duration(to: .now) >= .seconds(5) else { return }
            last = .now
            taken.append(fleet.residentMemory().reduce(0, +))
        }
    }
}

/// Prints a line and flushes it, so that each figure shows as soon as it is measured, also into a pipe or a file.
private func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// The broker path of a worker without its store: consume a message, publish one with a confirm, acknowledge.
enum BrokerCeiling {
    /// Messages per second through consume → publish (confirmed) → ack, `concurrency` at a time, on queues of
    /// its own that are deleted afterwards.
    static func measure(connection: AMQPConnection, messages: Int, concurrency: Int) async throws -> Double {
        let suffix = UInt32.random(in: 0...UInt32.max)
        let input = "fleet-bench.ceiling.in.\(suffix)", output = "fleet-bench.ceiling.out.\(suffix)"
        try await connection.declare(QueueDeclaration(name: input, durable: true, autoDelete: false))
        try await connection.declare(QueueDeclaration(name: output, durable: true, autoDelete: false))
        let filling = try await connection.makePublisher()
        let body = Data(#"{"order_id":"ceiling-0000","amount":4200,"currency":"EUR","customer":"c-1"}"#.utf8)
        var batch: [AMQPMessage] = []
        for index in 0..<messages {
            var properties = AMQPProperties.persistent
            properties.messageID = "ceiling-\(index)"
            properties.type = "CeilingMeasured"
            batch.append(AMQPMessage(body: body, exchange: "", routingKey: input, properties: properties))
            if batch.count == 1000 || index == messages - 1 {
                for result in await filling.publish(contentsOf: batch) { try result.get() }
                batch.removeAll(keepingCapacity: true)
            }
        }
        await filling.close()

        let publisher = try await connection.makePublisher()
        let consumer = try await connection.consume(queue: input, prefetch: UInt16(min(65535, concurrency * 2)))
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            var handled = 0, running = 0
            for try await delivery in consumer {
                if running >= concurrency {
                    try await group.next()
                    running -= 1
                }
                running += 1
                group.addTask {
                    var properties = AMQPProperties.persistent
                    properties.messageID = (delivery.properties.messageID ?? "") + "-out"
                    properties.type = "CeilingPassed"
                    try await publisher.publish(delivery.body, exchange: "", routingKey: output, properties: properties)
                    try delivery.ack()
                }
                handled += 1
                if handled == messages { break }
            }
            try await group.waitForAll()
        }
        let elapsed = started.duration(to: .now)
        try await consumer.cancel()
        await publisher.close()
        try await connection.deleteQueue(input)
        try await connection.deleteQueue(output)
        return Double(messages) / elapsed.seconds
    }
}
