import AMQP
import EventCore
import Fleet
import FleetSimulation
import FleetTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import OrderFulfillment
import Synchronization
import Testing

/// The whole fleet: `fleet worker` processes on a real broker and a real store, driven by the simulated
/// services. Each test has a virtual host of its own, so it sees only its own messages.
@Suite("The worker fleet end to end", .serialized, .timeLimit(.minutes(10)))
struct FleetEndToEndTests {
    /// `fleet worker` processes of one test.
    final class Fleet: Sendable {
        let vhost: String
        let storeURL: String
        let amqpURL: String
        private let workers = Mutex<[Process]>([])
        private let started = Mutex(0)
        private let workerURL = Mutex<String?>(nil)

        /// Makes the workers started from now on connect as `user` instead of the test broker's administrator.
        func connectWorkers(as user: String, password: String) {
            workerURL.withLock { $0 = "amqp://\(user):\(password)@127.0.0.1:5672/\(vhost)" }
        }

        init(storeURL: String) async throws {
            vhost = TestBroker.uniqueName("fleet")
            try await TestBroker.sharedControl("add_vhost", vhost)
            try await TestBroker.sharedControl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            amqpURL = "amqp://guest:guest@127.0.0.1:5672/\(vhost)"
            self.storeURL = storeURL
        }

        static var executable: URL {
            let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fleet")
            if FileManager.default.isExecutableFile(atPath: besideTests.path) { return besideTests }
            return TestBroker.repositoryRoot.appendingPathComponent(".build/debug/fleet")
        }

        /// Starts one more worker.
        @discardableResult
        func startWorker(extraArguments: [String] = [], environment extraEnvironment: [String: String] = [:]) throws -> Process {
            let index = started.withLock { count in
                count += 1
                return count
            }
            let process = Process()
            process.executableURL = Self.executable
            process.arguments = [
                "worker", "--http-port", "0", "--worker-id", "\(vhost)-worker-\(index)",
                "--order-step-timeout", "60", "--order-retries", "2", "--order-retry-delay", "1", "--order-deadline", "600",
            ] + extraArguments
            var environment = ProcessInfo.processInfo.environment
            environment["FLEET_AMQP_URL"] = workerURL.withLock { $0 } ?? amqpURL
            environment["FLEET_STORE_URL"] = storeURL
            environment["FLEET_TOPOLOGY"] = TestBroker.repositoryRoot.appendingPathComponent("topology.json").path
            environment["FLEET_LOG_LEVEL"] = "warning"
            environment["FLEET_CONCURRENCY"] = "16"
            environment.merge(extraEnvironment) { $1 }
            process.environment = environment
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(vhost)-worker-\(index).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            workers.withLock { $0.append(process) }
            return process
        }

        /// Waits until `count` workers consume every routed queue.
        func waitUntilConsuming(_ count: Int, topology: Topology, connection: AMQPConnection) async throws {
            let ready = try await TestBroker.eventually(90) {
                for route in topology.fleet.routes {
                    guard let state = try? await connection.declare(QueueDeclaration(name: route.queue), passive: true),
                          state.consumerCount >= UInt32(count) else { return false }
                }
                return true
            }
            try #require(ready, "workers did not start consuming; logs in \(FileManager.default.temporaryDirectory.path)/\(vhost)-worker-*.log")
        }

        /// Stops every worker (SIGTERM, then SIGKILL for one that has not drained within a minute) and
        /// deletes the virtual host.
        func stop() async {
            let processes = workers.withLock { $0 }
            for process in processes where process.isRunning { process.terminate() }
            for process in processes { await ChildProcess.waitForExit(process, timeout: .seconds(60)) }
            _ = try? await TestBroker.sharedControl("delete_vhost", vhost)
        }

        /// Runs `body` with a new fleet and stops it afterwards, whether `body` succeeds or not.
        static func with<T>(storeURL: String, _ body: (Fleet) async throws -> T) async throws -> T {
            let fleet = try await Fleet(storeURL: storeURL)
            do {
                let value = try await body(fleet)
                await fleet.stop()
                return value
            } catch {
                await fleet.stop()
                throw error
            }
        }
    }

    static func settings(orders: Int, trips: Int, seed: UInt64) -> SimulationSettings {
        var settings = SimulationSettings()
        settings.orders = orders
        settings.trips = trips
        settings.seed = seed
        settings.poisonMessages = 6
        // Opened at a pace the fleet keeps up with on a shared 2-core machine, so that no reply waits behind a
        // backlog longer than the step timeout (which would fail processes the simulator expects to complete).
        settings.openingsPerSecond = 40
        return settings
    }

    /// Runs the simulation and checks everything the fleet promises.
    /// - Parameter stopOneMidway: a signal sent to the first worker a third of the way through (another worker
    ///   then takes its place): SIGKILL for a crash, SIGTERM for a graceful stop that must drain and exit 0.
    static func runAndCheck(fleet: Fleet, settings: SimulationSettings, workers: Int, stopOneMidway: Int32?) async throws {
        let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        let admin = try await AMQPConnection.connect(url: fleet.amqpURL)
        var started: [Process] = []
        for _ in 0..<workers { started.append(try fleet.startWorker()) }
        let first = started[0]
        try await fleet.waitUntilConsuming(workers, topology: topology, connection: admin)

        let stopped = Mutex(false)
        let report = try await SimulationDriver.run(settings: settings, topology: topology, amqpURL: fleet.amqpURL, timeout: .seconds(400),
                                                    logger: Logger(label: "test.simulator")) { ended, total in
            // A third of the way through, a worker stops (dies, or is asked to) and another takes its place.
            guard let signal = stopOneMidway, ended * 3 >= total, !stopped.withLock({ $0 }) else { return }
            stopped.withLock { $0 = true }
            _ = try? fleet.startWorker()
            Foundation.kill(first.processIdentifier, signal)
        }
        #expect(report.finished, "not every process ended: \(report.summary)")
        #expect(report.mismatches.count == 0, "\(report.summary)")
        if let signal = stopOneMidway {
            #expect(stopped.withLock { $0 })
            await ChildProcess.waitForExit(first, timeout: .seconds(60))
            if signal == SIGTERM {
                #expect(first.terminationReason == .exit && first.terminationStatus == 0, "a worker asked to stop must drain and exit 0")
            }
        }

        // Nothing left in any queue but the dead letters sent on purpose (timeouts of ended processes still
        // travel the delay levels for a while, then are ignored).
        let drained = try await TestBroker.eventually(120) {
            for queue in topology.queues where queue.queueType != "stream" && queue.name != topology.fleet.deadLetterQueue {
                let state = try await admin.declare(QueueDeclaration(name: queue.name), passive: true)
                if state.messageCount > 0 { return false }
            }
            return true
        }
        #expect(drained, "messages were left in the fleet's queues")
        let deadLetters = try await admin.declare(QueueDeclaration(name: topology.fleet.deadLetterQueue), passive: true).messageCount
        #expect(deadLetters == UInt32(settings.poisonMessages))
        let reasons = try await deadLetterReasons(admin, queue: topology.fleet.deadLetterQueue, count: Int(deadLetters))
        #expect(Set(reasons).isSubset(of: ["malformed-body", "unknown-type", "invalid-payload"]), "\(reasons)")
        await admin.close()
        await fleet.stop()

        // The store: one effect per fact, and every process event the simulator saw is stored.
        let store = try await StoreConnection.open(fleet.storeURL, maximumPayloadBytes: 1 << 20, logger: Logger(label: "test.store"))
        let events = try await OperationsReplayTests.allEvents(store.store)
        await store.close()
        var storedByKind: [String: Int] = [:]
        var facts: [String: Int] = [:]
        for event in events {
            storedByKind[SimulationDriver.kind(of: event.streamID.description), default: 0] += 1
            if ["OrderPaymentRecorded", "OrderInventoryRecorded", "OrderShippingInfoUpdated", "OrderDeliveryRecorded", "ProcessStarted",
                "ProcessCompleted", "ProcessFailed"].contains(event.eventType) {
                facts["\(event.streamID) \(event.eventType)", default: 0] += 1
            }
        }
        let repeated = facts.filter { $0.value > 1 }
        #expect(repeated.isEmpty, "effects written twice: \(repeated.prefix(5))")
        for kind in ["order-fulfillment", "travel-booking"] {
            #expect(report.distinctProcessEvents[kind] == storedByKind[kind], "\(kind): published \(report.distinctProcessEvents[kind] ?? 0), stored \(storedByKind[kind] ?? 0)")
        }
    }

    static func deadLetterReasons(_ connection: AMQPConnection, queue: String, count: Int) async throws -> [String] {
        var reasons: [String] = []
        var deliveries: [AMQPDelivery] = []
        for _ in 0..<count {
            guard let delivery = try await connection.get(queue: queue) else { break }
            reasons.append(delivery.properties.headers?[Envelope.Header.error]?.stringValue ?? "none")
            deliveries.append(delivery)
        }
        for delivery in deliveries { try delivery.nack(requeue: true) }
        return reasons
    }

    /// `/health/live`, `/health/ready` and `/metrics` of a running worker, with the metrics of a message it handled.
    @Test func aWorkerServesHealthAndMetrics() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-http-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        try await Fleet.with(storeURL: path) { fleet in
            let port = TestPorts.free()
            let worker = try fleet.startWorker(extraArguments: ["--http-port", String(port)])
            let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
            let connection = try await AMQPConnection.connect(url: fleet.amqpURL)
            try await fleet.waitUntilConsuming(1, topology: topology, connection: connection)

            func get(_ path: String) async throws -> (Int, String) {
                let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
                return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
            }
            #expect(try await get("/health/live").0 == 200)
            #expect(try await get("/health/ready").0 == 200)
            #expect(try await get("/nothing-here").0 == 404)

            let publisher = try await connection.makePublisher()
            var properties = AMQPProperties.persistent
            properties.contentType = "application/json"
            properties.type = "OrderPlaced"
            properties.messageID = "http-test-order"
            try await publisher.publish(#"{"order_id":"http-1"}"#, exchange: "domain.events", routingKey: "order.placed", properties: properties)
            var metrics = ""
            let handled = try await TestBroker.eventually(30) {
                metrics = try await get("/metrics").1
                return metrics.contains("eventcore_processes_started_total") && metrics.contains("fleet_messages_acked_total")
            }
            #expect(handled, "metrics after one message: \(metrics.prefix(2000))")
            for name in ["fleet_messages_consumed_total", "fleet_handler_duration_seconds", "fleet_publications_total", "fleet_timeouts_scheduled_total"] {
                #expect(metrics.contains(name), "\(name) missing")
            }
            await connection.close()
            worker.terminate()
            await ChildProcess.waitForExit(worker, timeout: .seconds(60))
            #expect(worker.terminationStatus == 0)
        }
    }

    @Test func threeWorkersOnPostgreSQLWithOneKilledMidway() async throws {
        let schema = "e2e_\(UUID().uuidString.prefix(8).lowercased())"
        let url = (ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet") + "?schema=\(schema)"
        try await Fleet.with(storeURL: url) { fleet in
            try await Self.runAndCheck(fleet: fleet, settings: Self.settings(orders: 1000, trips: 200, seed: 7), workers: 3, stopOneMidway: SIGKILL)
        }
    }

    /// The deployment's least-privilege broker user (configure, write and read only on the fleet's names, as
    /// `deploy/compose/rabbitmq-entrypoint.sh` grants them) is enough for a worker to declare its topology and
    /// run every kind of process, timeouts and dead letters included.
    @Test func workersRunUnderTheDeploymentsLeastPrivilegeUser() async throws {
        let script = try String(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("deploy/compose/rabbitmq-entrypoint.sh"), encoding: .utf8)
        let line = try #require(script.split(separator: "\n").first { $0.hasPrefix("fleet_names = r\"") }, "fleet_names is defined by the entrypoint")
        let names = String(line.dropFirst("fleet_names = r\"".count).dropLast())
        #expect(names.hasPrefix("^(") && names.hasSuffix(")$"), "\(names)")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-least-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let user = "fleet-worker-\(UUID().uuidString.prefix(8).lowercased())", password = UUID().uuidString
        try await TestBroker.sharedControl("add_user", user, password)
        do {
            try await Fleet.with(storeURL: path) { fleet in
                try await TestBroker.sharedControl("set_permissions", "-p", fleet.vhost, user, names, names, names)
                fleet.connectWorkers(as: user, password: password)
                try await Self.runAndCheck(fleet: fleet, settings: Self.settings(orders: 100, trips: 30, seed: 9), workers: 1, stopOneMidway: nil)
            }
            _ = try? await TestBroker.sharedControl("delete_user", user)
        } catch {
            _ = try? await TestBroker.sharedControl("delete_user", user)
            throw error
        }
    }

    /// One worker at a time on the embedded store; a third of the way through it is stopped with SIGTERM
    /// (it drains and exits 0) and a new one carries on.
    @Test func oneWorkerOnTheEmbeddedSQLiteStore() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-e2e-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        try await Fleet.with(storeURL: path) { fleet in
            try await Self.runAndCheck(fleet: fleet, settings: Self.settings(orders: 1000, trips: 200, seed: 8), workers: 1, stopOneMidway: SIGTERM)
        }
    }
}
