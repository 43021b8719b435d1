import AMQP
import EventCore
import Fleet
import FleetSimulation
import FleetTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OrderFulfillment
import Synchronization
import Testing

/// The fleet under faults: three workers on a PostgreSQL of their own and the broker node reserved for
/// disruptive tests, driven by the simulated services, while a worker is killed every few seconds (and replaced),
/// one is paused past its heartbeat, the broker restarts once and PostgreSQL restarts once. At the end every
/// process has ended as expected, every effect happened once, every process event was published and nothing
/// but the poison messages sent on purpose was dead-lettered.
///
/// Size and pace come from the environment: `CHAOS_ORDERS` (default 1000), `CHAOS_TRIPS` (200), `CHAOS_RATE`
/// (openings per second, 30), `CHAOS_SEED` (random), `CHAOS_KILL_EVERY` (seconds between kills, 5),
/// `CHAOS_POSTGRES_PORT` (5442). The issue's full size is `CHAOS_ORDERS=5000 CHAOS_TRIPS=1000`.
@Suite("Chaos: the fleet under faults", .serialized, .timeLimit(.minutes(30)))
struct ChaosTests {
    struct Parameters: CustomStringConvertible {
        var orders = 1000
        var trips = 200
        var rate = 30
        var seed = UInt64.random(in: 1..<1_000_000)
        var killEvery = 5.0
        var postgresPort = 5442
        /// Heartbeat the workers ask the broker for; the pause lasts longer than the broker's timeout.
        var heartbeat = 5

        init(environment: [String: String]) {
            if let value = environment["CHAOS_ORDERS"].flatMap(Int.init) { orders = value }
            if let value = environment["CHAOS_TRIPS"].flatMap(Int.init) { trips = value }
            if let value = environment["CHAOS_RATE"].flatMap(Int.init), value > 0 { rate = value }
            if let value = environment["CHAOS_SEED"].flatMap(UInt64.init) { seed = value }
            if let value = environment["CHAOS_KILL_EVERY"].flatMap(Double.init), value > 0 { killEvery = value }
            if let value = environment["CHAOS_POSTGRES_PORT"].flatMap(Int.init) { postgresPort = value }
        }

        /// How long faults are injected: while the processes are being opened, and a little after.
        var faultSeconds: Double { max(60, Double(orders + trips) / Double(rate) + 20) }

        var description: String {
            "orders \(orders), trips \(trips), \(rate) openings/s, seed \(seed), a kill every ~\(killEvery) s, faults for \(Int(faultSeconds)) s"
        }
    }

    /// A child process started with `posix_spawn` and reaped by a thread of its own (a blocking `waitpid` on its
    /// pid). Foundation's `Process` sometimes never notices a child's exit when several children end close
    /// together (the child stays a zombie, `isRunning` stays true and the termination handler never runs), which
    /// left this test waiting for ever on a script that had ended.
    final class Child: Sendable {
        let pid: pid_t
        /// The wait status once ended (-1 when it could not be read).
        private let ended = ExitStatus()

        final class ExitStatus: Sendable {
            private let status = Mutex<Int32?>(nil)
            func withLock<T>(_ body: (inout Int32?) -> T) -> T { status.withLock { body(&$0) } }
        }

        init(_ path: String, _ arguments: [String], environment: [String: String], output: String) throws {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            // The child gets only its standard streams: every other descriptor of this process (sockets, pipes) is
            // marked close-on-exec first.
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
                guard let descriptor = Int32(name), descriptor > 2 else { continue }
                let flags = fcntl(descriptor, F_GETFD)
                if flags >= 0 { _ = fcntl(descriptor, F_SETFD, flags | FD_CLOEXEC) }
            }
            let argv = ([path] + arguments).map { strdup($0) } + [nil]
            let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer {
                for pointer in argv { free(pointer) }
                for pointer in envp { free(pointer) }
            }
            var pid: pid_t = 0
            let status = posix_spawn(&pid, path, &actions, nil, argv, envp)
            guard status == 0 else { throw TestFailure("posix_spawn \(path): \(String(cString: strerror(status)))") }
            self.pid = pid
            let spawned = pid
            Thread.detachNewThread { [ended] in
                var status: Int32 = 0
                var result: pid_t
                repeat { result = waitpid(spawned, &status, 0) } while result == -1 && errno == EINTR
                ended.withLock { $0 = result == spawned ? status : -1 }
            }
        }

        var isRunning: Bool { ended.withLock { $0 == nil } }

        /// Whether it exited with status 0.
        var exitedCleanly: Bool { ended.withLock { $0.map { $0 & 0x7f == 0 && ($0 >> 8) & 0xff == 0 } ?? false } }

        /// How it ended, for messages.
        var termination: String {
            ended.withLock { status in
                guard let status else { return "running" }
                if status == -1 { return "ended (status unknown)" }
                return status & 0x7f == 0 ? "exit \((status >> 8) & 0xff)" : "signal \(status & 0x7f)"
            }
        }

        func signal(_ signal: Int32) { _ = Glibc.kill(pid, signal) }

        /// Waits until it ends; past `timeout` kills it (SIGKILL) and waits for that. Returns whether it had to be
        /// killed.
        @discardableResult
        func wait(timeout: Duration) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            guard isRunning else { return false }
            signal(SIGKILL)
            while isRunning { try? await Task.sleep(for: .milliseconds(50)) }
            return true
        }

        /// Runs a script to its end (killed after `timeout`) and returns whether it succeeded and its output.
        static func run(_ path: String, _ arguments: [String], environment: [String: String], timeout: Duration = .seconds(180)) async throws -> String {
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-\(UUID().uuidString).out").path
            defer { try? FileManager.default.removeItem(atPath: output) }
            let child = try Child(path, arguments, environment: environment, output: output)
            let killed = await child.wait(timeout: timeout)
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            guard !killed, child.exitedCleanly else { throw TestFailure("\(path) \(arguments.joined(separator: " ")): \(killed ? "killed after \(timeout)" : child.termination): \(text)") }
            return text
        }
    }

    /// `rabbitmqctl` on the disruptive node, through the project's script (as `TestBroker.disruptiveControl`).
    @discardableResult
    static func brokerControl(_ arguments: String...) async throws -> String {
        var environment = ProcessInfo.processInfo.environment
        environment["FLEET_RUN_DIR"] = TestBroker.disruptiveRunDirectory
        environment["RABBITMQ_NODE"] = "disruptive@localhost"
        environment["RABBITMQ_PORT"] = String(TestBroker.disruptivePort)
        return try await Child.run(TestBroker.repositoryRoot.appendingPathComponent("scripts/rabbitmq").path, ["ctl"] + arguments, environment: environment)
    }

    /// A PostgreSQL server of the test's own (its own folder and port), so that restarting it disturbs no
    /// other test. Started and stopped through `scripts/postgres`.
    struct OwnPostgres {
        let port: Int
        let runDirectory = "/tmp/processfleet-chaos"

        func control(_ command: String) async throws -> Duration {
            var environment = ProcessInfo.processInfo.environment
            environment["FLEET_RUN_DIR"] = runDirectory
            environment["POSTGRES_PORT"] = String(port)
            environment["POSTGRES_URL"] = nil
            let started = ContinuousClock.now
            _ = try await Child.run(TestBroker.repositoryRoot.appendingPathComponent("scripts/postgres").path, [command], environment: environment)
            return started.duration(to: .now)
        }

        func url(schema: String) -> String {
            "postgres://fleet:fleet@127.0.0.1:\(port)/fleet?schema=\(schema)"
        }
    }

    /// The chaos fleet: `fleet worker` processes on their own virtual host of the disruptive broker node.
    final class ChaosFleet: Sendable {
        struct Worker: Sendable {
            let index: Int
            let process: Child
            let httpPort: Int
        }

        let vhost: String
        let amqpURL: String
        let storeURL: String
        let heartbeat: Int
        let logDirectory: URL
        private let all = Mutex<[Worker]>([])
        /// Workers stopped on purpose (SIGKILL), by index.
        private let killed = Mutex<Set<Int>>([])

        init(storeURL: String, heartbeat: Int) async throws {
            vhost = TestBroker.uniqueName("chaos")
            try await ChaosTests.brokerControl("add_vhost", vhost)
            try await ChaosTests.brokerControl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            amqpURL = "amqp://guest:guest@127.0.0.1:\(TestBroker.disruptivePort)/\(vhost)"
            self.storeURL = storeURL
            self.heartbeat = heartbeat
            logDirectory = FileManager.default.temporaryDirectory
        }

        var live: [Worker] { all.withLock { $0.filter { $0.process.isRunning } } }
        var everyWorker: [Worker] { all.withLock { $0 } }
        var killedOnPurpose: Set<Int> { killed.withLock { $0 } }

        func logPath(_ index: Int) -> String { logDirectory.appendingPathComponent("\(vhost)-worker-\(index).log").path }

        @discardableResult
        func startWorker() throws -> Worker {
            let index = all.withLock { $0.count + 1 }
            let port = TestPorts.free()
            let arguments = [
                "worker", "--http-port", String(port), "--worker-id", "\(vhost)-worker-\(index)",
                "--order-step-timeout", "60", "--order-retries", "2", "--order-retry-delay", "1", "--order-deadline", "600",
            ]
            var environment = ProcessInfo.processInfo.environment
            // A short heartbeat, so that the broker gives up on a paused worker within seconds.
            environment["FLEET_AMQP_URL"] = "\(amqpURL)?heartbeat=\(heartbeat)"
            environment["FLEET_STORE_URL"] = storeURL
            environment["FLEET_TOPOLOGY"] = TestBroker.repositoryRoot.appendingPathComponent("topology.json").path
            environment["FLEET_LOG_LEVEL"] = "info"
            environment["FLEET_CONCURRENCY"] = "16"
            environment["FLEET_HTTP_HOST"] = "127.0.0.1"
            // A message whose handling is stuck goes back to the broker well before the processes' step timeout.
            environment["FLEET_HANDLER_TIMEOUT_SECONDS"] = "20"
            let process = try Child(FleetEndToEndTests.Fleet.executable.path, arguments, environment: environment, output: logPath(index))
            let worker = Worker(index: index, process: process, httpPort: port)
            all.withLock { $0.append(worker) }
            return worker
        }

        /// Kills `worker` with SIGKILL and waits until it is gone.
        func kill(_ worker: Worker) async {
            killed.withLock { _ = $0.insert(worker.index) }
            worker.process.signal(SIGKILL)
            await worker.process.wait(timeout: .seconds(30))
        }

        /// Asks every live worker to stop (SIGTERM); returns those that did not exit 0 within a minute.
        func stopAll() async -> [String] {
            var problems: [String] = []
            let running = live
            for worker in running {
                worker.process.signal(SIGCONT)
                worker.process.signal(SIGTERM)
            }
            for worker in running {
                let hung = await worker.process.wait(timeout: .seconds(60))
                if hung {
                    problems.append("worker \(worker.index) did not stop within a minute of SIGTERM (log \(logPath(worker.index)))")
                } else if !worker.process.exitedCleanly {
                    problems.append("worker \(worker.index) ended with \(worker.process.termination) on SIGTERM (log \(logPath(worker.index)))")
                }
            }
            return problems
        }

        /// How many times a worker gave up on a message that took too long (from the workers' logs).
        func messagesGivenUp() -> Int {
            everyWorker.reduce(0) { total, worker in
                let text = (try? String(contentsOfFile: logPath(worker.index), encoding: .utf8)) ?? ""
                return total + text.components(separatedBy: "handling a message took too long").count - 1
            }
        }

        /// Workers that ended without being killed on purpose.
        func unexpectedExits() -> [String] {
            let killed = killedOnPurpose
            return everyWorker.filter { !$0.process.isRunning && !killed.contains($0.index) }.map {
                "worker \($0.index) ended with \($0.process.termination) (log \(logPath($0.index)))"
            }
        }

        func deleteVirtualHost() async {
            _ = try? await ChaosTests.brokerControl("delete_vhost", vhost)
        }
    }

    /// HTTP to a worker's endpoint, giving up after two seconds (a paused worker does not answer). Plain
    /// sockets with receive and send timeouts, on a thread of their own: the wait is bounded whatever the
    /// worker does, and no thread of the cooperative pool is blocked.
    static func get(port: Int, path: String) async -> (Int, String)? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: blockingGet(port: port, path: path))
            }
        }
    }

    private static func blockingGet(port: Int, path: String) -> (Int, String)? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        let deadline = ContinuousClock.now + .seconds(2)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while ContinuousClock.now < deadline {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += buffer[0..<count]
            if let (status, body) = parseResponse(received), body != nil { return (status, body!) }
        }
        guard let (status, body) = parseResponse(received, complete: true) else { return nil }
        return (status, body ?? "")
    }

    /// The status and body of an HTTP response; the body is nil while it is shorter than its Content-Length
    /// (or, without one, until the connection has closed: `complete`).
    private static func parseResponse(_ bytes: [UInt8], complete: Bool = false) -> (Int, String?)? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n") else { return nil }
        let head = text[..<headerEnd.lowerBound]
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        let body = String(text[headerEnd.upperBound...])
        let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
        if let length { return (status, body.utf8.count >= length ? body : nil) }
        return (status, complete ? body : nil)
    }

    /// The sum of every series of `name` in Prometheus text.
    static func metric(_ name: String, in text: String) -> Double {
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { total += value }
        }
        return total
    }

    /// The last values of the workers' counters, per worker (a killed worker keeps its last scraped value).
    final class Scraper: Sendable {
        static let names = ["fleet_messages_redelivered_total", "fleet_duplicates_absorbed_total", "fleet_messages_retried_total",
                            "fleet_messages_consumed_total"]
        private let values = Mutex<[Int: [String: Double]]>([:])

        func scrape(_ workers: [ChaosFleet.Worker]) async {
            for worker in workers {
                guard let (status, text) = await ChaosTests.get(port: worker.httpPort, path: "/metrics"), status == 200 else { continue }
                var latest: [String: Double] = [:]
                for name in Self.names { latest[name] = ChaosTests.metric(name, in: text) }
                values.withLock { $0[worker.index] = latest }
            }
        }

        func total(_ name: String) -> Int {
            values.withLock { Int($0.values.reduce(0) { $0 + ($1[name] ?? 0) }) }
        }
    }

    /// Log lines written straight to a file of the run (test output is buffered), for following a run as it goes.
    struct FileLogHandler: LogHandler {
        let handle: FileHandle
        let label: String
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            handle.write(Data("\(Date()) \(event.level) \(label): \(event.message) \(all)\n".utf8))
        }

        static func logger(_ label: String, handle: FileHandle?) -> Logger {
            Logger(label: label) { label in
                guard let handle else { return SwiftLogNoOpLogHandler() }
                return FileLogHandler(handle: handle, label: label)
            }
        }
    }

    /// Set once the simulation has ended.
    final class StopFlag: Sendable {
        private let state = Mutex(false)
        var isSet: Bool { state.withLock { $0 } }
        func set() { state.withLock { $0 = true } }
    }

    /// What the fault driver did.
    struct FaultLog: Sendable {
        var kills = 0
        var replacements = 0
        var pauses: [Double] = []
        var pausedWorkerDroppedByBroker: Bool?
        var pausedWorkerReadyAgain: Bool?
        var brokerRestarts: [Double] = []
        var postgresRestarts: [Double] = []
        var workersReadyAfterRestarts = true
        /// Workers that answered `/health/ready` with 200 while the broker was stopped.
        var readyWhileBrokerDown: [String] = []
        var notes: [String] = []

        var total: Int { kills + pauses.count + brokerRestarts.count + postgresRestarts.count }
    }

    static func seconds(_ duration: Duration) -> Double { duration.seconds }

    /// Waits until every live worker answers `/health/ready` with 200.
    static func allReady(_ fleet: ChaosFleet, within seconds: Double) async throws -> Bool {
        try await TestBroker.eventually(seconds) {
            for worker in fleet.live {
                guard let (status, _) = await get(port: worker.httpPort, path: "/health/ready"), status == 200 else { return false }
            }
            return true
        }
    }

    /// Whether the broker lists a connection of `workerID` on the chaos virtual host.
    static func brokerHasConnection(of workerID: String, vhost: String) async -> Bool? {
        guard let output = try? await brokerControl("-q", "list_connections", "vhost", "client_properties") else { return nil }
        return output.split(separator: "\n").contains { $0.hasPrefix(vhost) && $0.contains(workerID) }
    }

    /// Injects the faults until `deadline` or until `done` says the simulation ended: a SIGKILL every few
    /// seconds (a replacement is started each time), one pause past the heartbeat, one broker restart and one
    /// PostgreSQL restart, spread over the period.
    static func injectFaults(fleet: ChaosFleet, postgres: OwnPostgres, parameters: Parameters, done: StopFlag, logger: Logger,
                             consumers: @escaping @Sendable () async -> Int?) async -> FaultLog {
        /// Whether every live worker consumes every routed queue and its store answers, within 90 seconds.
        func allReadyOrFalse(_ fleet: ChaosFleet) async -> Bool {
            let ready = try? await TestBroker.eventually(90) {
                guard let count = await consumers(), count >= fleet.live.count else { return false }
                return try await allReady(fleet, within: 0)
            }
            return ready ?? false
        }
        var log = FaultLog()
        let start = ContinuousClock.now
        let period = parameters.faultSeconds
        func elapsed() -> Double { seconds(start.duration(to: .now)) }
        let pauseAt = period * 0.1, brokerAt = period * 0.35, postgresAt = period * 0.6
        var nextKill = parameters.killEvery * Double.random(in: 0.6...1.4)
        var paused: (worker: ChaosFleet.Worker, since: ContinuousClock.Instant, checked: Bool)?
        var pauseDone = false, brokerDone = false, postgresDone = false
        let workerIDPrefix = "\(fleet.vhost)-worker-"

        func resume(_ pause: (worker: ChaosFleet.Worker, since: ContinuousClock.Instant, checked: Bool)) async {
            pause.worker.process.signal(SIGCONT)
            log.pauses.append(seconds(pause.since.duration(to: .now)))
            logger.info("chaos: SIGCONT", metadata: ["worker": "\(pause.worker.index)", "paused": "\(log.pauses.last ?? 0)"])
            // Once resumed it finds its connections gone, reconnects and consumes again.
            log.pausedWorkerReadyAgain = await allReadyOrFalse(fleet)
        }

        // Every kind of fault happens once, even when the period is over before (a slow restart); kills
        // go on for the whole period. The simulation's end stops it early only once every kind happened.
        while !(pauseDone && brokerDone && postgresDone && (elapsed() >= period || done.isSet)) {
            // The pause: SIGSTOP, then SIGCONT once the broker has dropped the worker's connections for
            // missing heartbeats (checked after three heartbeats, and every few seconds after that, for at
            // most a minute).
            if !pauseDone, paused == nil, elapsed() >= pauseAt, let worker = fleet.live.randomElement() {
                worker.process.signal(SIGSTOP)
                paused = (worker, .now, false)
                logger.info("chaos: SIGSTOP", metadata: ["worker": "\(worker.index)"])
            }
            if let pause = paused {
                let pausedFor = seconds(pause.since.duration(to: .now))
                if pausedFor >= Double(parameters.heartbeat * 3) {
                    let present = await brokerHasConnection(of: "\(workerIDPrefix)\(pause.worker.index) ", vhost: fleet.vhost)
                    if present == false || pausedFor >= 60 {
                        log.pausedWorkerDroppedByBroker = present == false
                        await resume(pause)
                        paused = nil
                        pauseDone = true
                    }
                }
            }
            // The broker restart: the application stops (connections are closed, queues stay on disk) and
            // starts again.
            // The restarts wait for the pause to end and for every worker to consume: a worker starting
            // while the broker or the store is down exits (to be started again by its supervisor), which
            // is not what is tested here.
            if !brokerDone, paused == nil, pauseDone, elapsed() >= brokerAt {
                brokerDone = true
                if !(await allReadyOrFalse(fleet)) { log.notes.append("workers not ready before the broker restart") }
                let began = ContinuousClock.now
                logger.info("chaos: restarting the broker")
                do {
                    try await brokerControl("stop_app")
                    try await Task.sleep(for: .seconds(1))
                    // With the broker stopped, no worker is ready: a load balancer or orchestrator must see it.
                    for worker in fleet.live {
                        if let (status, body) = await Self.get(port: worker.httpPort, path: "/health/ready"), status == 200 {
                            log.readyWhileBrokerDown.append("worker \(worker.index): \(body.prefix(200))")
                        }
                    }
                    try await Task.sleep(for: .seconds(1))
                    try await brokerControl("start_app")
                    log.brokerRestarts.append(seconds(began.duration(to: .now)))
                } catch {
                    log.notes.append("broker restart failed: \(error)")
                    _ = try? await brokerControl("start_app")
                }
                logger.info("chaos: waiting for every worker to consume")
                if !(await allReadyOrFalse(fleet)) {
                    log.workersReadyAfterRestarts = false
                    log.notes.append("workers not ready within 90 s of the broker restart")
                }
            }
            if !postgresDone, brokerDone, paused == nil, elapsed() >= postgresAt {
                postgresDone = true
                if !(await allReadyOrFalse(fleet)) { log.notes.append("workers not ready before the PostgreSQL restart") }
                logger.info("chaos: restarting PostgreSQL")
                do {
                    log.postgresRestarts.append(seconds(try await postgres.control("restart")))
                } catch {
                    log.notes.append("PostgreSQL restart failed: \(error)")
                    _ = try? await postgres.control("start")
                }
                logger.info("chaos: waiting for every worker to consume")
                if !(await allReadyOrFalse(fleet)) {
                    log.workersReadyAfterRestarts = false
                    log.notes.append("workers not ready within 90 s of the PostgreSQL restart")
                }
            }
            // A kill: any live worker but the paused one; a replacement starts at once and the next fault
            // waits until it consumes.
            if elapsed() >= nextKill, elapsed() < period {
                nextKill = elapsed() + parameters.killEvery * Double.random(in: 0.6...1.4)
                if let victim = fleet.live.filter({ $0.index != paused?.worker.index }).randomElement() {
                    await fleet.kill(victim)
                    log.kills += 1
                    logger.info("chaos: SIGKILL", metadata: ["worker": "\(victim.index)"])
                    do {
                        try fleet.startWorker()
                        log.replacements += 1
                    } catch {
                        log.notes.append("starting a replacement failed: \(error)")
                    }
                    if paused == nil, !(await allReadyOrFalse(fleet)) {
                        log.workersReadyAfterRestarts = false
                        log.notes.append("a replacement worker was not ready within 90 s")
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        if let pause = paused {
            await resume(pause)
            log.pausedWorkerDroppedByBroker = log.pausedWorkerDroppedByBroker ?? false
        }
        return log
    }

    @Test func threeWorkersOnPostgreSQLUnderFaults() async throws {
        let parameters = Parameters(environment: ProcessInfo.processInfo.environment)
        print("chaos: \(parameters)")
        let postgres = OwnPostgres(port: parameters.postgresPort)
        _ = try await postgres.control("start")
        let schema = "chaos_\(UUID().uuidString.prefix(8).lowercased())"
        let fleet = try await ChaosFleet(storeURL: postgres.url(schema: schema), heartbeat: parameters.heartbeat)
        do {
            try await run(fleet: fleet, postgres: postgres, parameters: parameters)
        } catch {
            _ = await fleet.stopAll()
            await cleanUp(fleet: fleet, postgres: postgres)
            throw error
        }
        await cleanUp(fleet: fleet, postgres: postgres)
    }

    private func cleanUp(fleet: ChaosFleet, postgres: OwnPostgres) async {
        // A broker left stopped by a failure is started again; the test's own PostgreSQL is stopped.
        _ = try? await Self.brokerControl("start_app")
        await fleet.deleteVirtualHost()
        _ = try? await postgres.control("stop")
    }

    private func run(fleet: ChaosFleet, postgres: OwnPostgres, parameters: Parameters) async throws {
        let logPath = fleet.logDirectory.appendingPathComponent("\(fleet.vhost)-chaos.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let handle = FileHandle(forWritingAtPath: logPath)
        let logger = FileLogHandler.logger("test.chaos", handle: handle)
        let simulatorLogger = FileLogHandler.logger("test.simulator", handle: handle)
        print("chaos: log in \(logPath), workers' logs in \(fleet.logDirectory.path)/\(fleet.vhost)-worker-*.log")
        let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        for _ in 0..<3 { try fleet.startWorker() }
        let admin = try await AMQPConnection.connect(url: fleet.amqpURL)
        let consuming = try await TestBroker.eventually(90) {
            for route in topology.fleet.routes {
                guard let state = try? await admin.declare(QueueDeclaration(name: route.queue), passive: true), state.consumerCount >= 3 else { return false }
            }
            return true
        }
        try #require(consuming, "workers did not start consuming; logs in \(fleet.logDirectory.path)/\(fleet.vhost)-worker-*.log")

        var settings = SimulationSettings()
        settings.orders = parameters.orders
        settings.trips = parameters.trips
        settings.seed = parameters.seed
        settings.poisonMessages = 6
        settings.openingsPerSecond = parameters.rate

        let scraper = Scraper()
        let done = StopFlag()
        let started = ContinuousClock.now
        // The fewest consumers on a routed queue.
        let consumers: @Sendable () async -> Int? = {
            var fewest = Int.max
            for route in topology.fleet.routes {
                guard let state = try? await admin.declare(QueueDeclaration(name: route.queue), passive: true) else { return nil }
                fewest = min(fewest, Int(state.consumerCount))
            }
            return fewest
        }
        async let faultLog = Self.injectFaults(fleet: fleet, postgres: postgres, parameters: parameters, done: done, logger: logger,
                                               consumers: consumers)
        async let scraping: Void = {
            while !done.isSet {
                await scraper.scrape(fleet.live)
                try? await Task.sleep(for: .seconds(1))
            }
        }()
        let outcome: Result<SimulationDriver.Report, any Error>
        do {
            outcome = .success(try await SimulationDriver.run(settings: settings, topology: topology, amqpURL: fleet.amqpURL, timeout: .seconds(900),
                                                              logger: simulatorLogger) { _, _ in })
        } catch {
            outcome = .failure(error)
        }
        logger.info("chaos: simulation ended", metadata: ["outcome": "\((try? outcome.get()).map { $0.summary } ?? "\(outcome)")"])
        done.set()
        let faults = await faultLog
        logger.info("chaos: faults ended")
        await scraping
        logger.info("chaos: checking")
        let report = try outcome.get()
        let simulated = Self.seconds(started.duration(to: .now))

        #expect(report.finished, "not every process ended: \(report.summary)")
        #expect(report.mismatches.count == 0, "\(report.summary)")
        #expect(report.publishFailures.isEmpty, "\(report.publishFailures.prefix(5))")

        // Every fault happened, and the fleet came back from each.
        #expect(faults.kills >= 3, "kills: \(faults.kills)")
        #expect(faults.replacements == faults.kills)
        #expect(faults.pauses.count == 1)
        #expect(faults.pausedWorkerDroppedByBroker == true, "the broker did not drop the paused worker's connection")
        #expect(faults.pausedWorkerReadyAgain == true, "the paused worker did not consume again after SIGCONT")
        #expect(faults.brokerRestarts.count == 1)
        #expect(faults.postgresRestarts.count == 1)
        #expect(faults.workersReadyAfterRestarts, "\(faults.notes)")
        #expect(faults.readyWhileBrokerDown.isEmpty, "ready while the broker was stopped: \(faults.readyWhileBrokerDown)")
        #expect(faults.notes.isEmpty, "\(faults.notes)")
        #expect(fleet.unexpectedExits().isEmpty, "\(fleet.unexpectedExits())")

        // Nothing left in any queue but the poison messages in the dead-letter queue.
        let drained = try await TestBroker.eventually(180) {
            for queue in topology.queues where queue.queueType != "stream" && queue.name != topology.fleet.deadLetterQueue {
                let state = try await admin.declare(QueueDeclaration(name: queue.name), passive: true)
                if state.messageCount > 0 { return false }
            }
            return true
        }
        #expect(drained, "messages were left in the fleet's queues")
        logger.info("chaos: queues drained", metadata: ["drained": "\(drained)"])
        let deadLetters = try await admin.declare(QueueDeclaration(name: topology.fleet.deadLetterQueue), passive: true).messageCount
        #expect(deadLetters == UInt32(settings.poisonMessages))
        let reasons = try await FleetEndToEndTests.deadLetterReasons(admin, queue: topology.fleet.deadLetterQueue, count: Int(deadLetters))
        #expect(Set(reasons).isSubset(of: ["malformed-body", "unknown-type", "invalid-payload"]), "\(reasons)")
        await admin.close()

        await scraper.scrape(fleet.live)
        logger.info("chaos: stopping the workers")
        let stopProblems = await fleet.stopAll()
        logger.info("chaos: workers stopped", metadata: ["problems": "\(stopProblems)"])
        #expect(stopProblems.isEmpty, "\(stopProblems)")

        // The store: one effect per message and handler, and exactly the process events published.
        let store = try await StoreConnection.open(fleet.storeURL, maximumPayloadBytes: 1 << 20, logger: Logger(label: "test.store"))
        let events = try await OperationsReplayTests.allEvents(store.store)
        await store.close()
        var facts: [String: Int] = [:]
        var effects: [String: Int] = [:]
        var storedIDs: [String: Set<String>] = [:]
        for event in events {
            let kind = SimulationDriver.kind(of: event.streamID.description)
            storedIDs[kind, default: []].insert(event.id.description)
            if ["OrderPaymentRecorded", "OrderInventoryRecorded", "OrderShippingInfoUpdated", "OrderDeliveryRecorded", "ProcessStarted",
                "ProcessCompleted", "ProcessFailed"].contains(event.eventType) {
                facts["\(event.streamID) \(event.eventType)", default: 0] += 1
            }
            // A message handled twice with two effects would write its events to the process's stream twice.
            if kind == "order-fulfillment", let source = event.metadata.sourceMessageID {
                effects["\(event.streamID) \(source) \(event.eventType)", default: 0] += 1
            }
        }
        let repeated = facts.filter { $0.value > 1 }
        #expect(repeated.isEmpty, "effects written twice: \(repeated.prefix(5))")
        let repeatedEffects = effects.filter { $0.value > 1 }
        #expect(repeatedEffects.isEmpty, "a message's effect written twice: \(repeatedEffects.prefix(5))")
        // Every event seen on the process events exchange is stored; every event of a process stream is seen.
        let processKinds = ["order-fulfillment", "travel-booking"]
        let storedProcessEvents = processKinds.reduce(0) { $0 + (storedIDs[$1]?.count ?? 0) }
        #expect(storedProcessEvents > 0)
        for kind in Set(storedIDs.keys).union(report.processEventIDs.keys).sorted() {
            let stored = storedIDs[kind] ?? [], published = report.processEventIDs[kind] ?? []
            let unknown = published.subtracting(stored)
            #expect(unknown.isEmpty, "\(kind): \(unknown.count) events seen on the exchange that the store does not hold, e.g. \(Array(unknown.prefix(3)))")
            if processKinds.contains(kind) {
                let unpublished = stored.subtracting(published)
                #expect(unpublished.isEmpty, "\(kind): \(unpublished.count) stored events never seen on the exchange, e.g. \(Array(unpublished.prefix(3)))")
            }
        }
        let publishedIDs = report.processEventIDs.values.reduce(0) { $0 + $1.count }

        let duplicatesSeen = report.processEventsReceived - publishedIDs
        print("""
            chaos figures (\(parameters)):
              processes: \(report.processes), every one ended as expected: \(report.mismatches.isEmpty && report.finished)
            \(report.summary.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
              faults injected: \(faults.total): \(faults.kills) SIGKILLs (each replaced), \(faults.pauses.count) SIGSTOP of \(faults.pauses.map { String(format: "%.1f s", $0) }.joined()) (heartbeat \(parameters.heartbeat) s; dropped by the broker: \(faults.pausedWorkerDroppedByBroker.map(String.init) ?? "?")), \(faults.brokerRestarts.count) broker restart (\(faults.brokerRestarts.map { String(format: "%.1f s", $0) }.joined())), \(faults.postgresRestarts.count) PostgreSQL restart (\(faults.postgresRestarts.map { String(format: "%.1f s", $0) }.joined()))
              workers started: \(fleet.everyWorker.count)
              messages redelivered to workers: \(scraper.total("fleet_messages_redelivered_total")) (of \(scraper.total("fleet_messages_consumed_total")) consumed; scraped every second, a killed worker's last second is not counted)
              duplicates absorbed by the store's idempotency keys: \(scraper.total("fleet_duplicates_absorbed_total"))
              messages given up on after 20 s and returned to the broker: \(fleet.messagesGivenUp())
              transient failures retried through the delay queues: \(scraper.total("fleet_messages_retried_total"))
              process events: \(storedProcessEvents) stored in process streams, \(publishedIDs) distinct published (all kinds), \(duplicatesSeen) duplicates received (\(report.processEventsRedelivered) redelivered to the simulator)
              dead letters: \(deadLetters) (\(settings.poisonMessages) poison messages sent on purpose): \(reasons.sorted().joined(separator: ", "))
              duration: \(String(format: "%.1f", simulated)) s simulated, fault period \(Int(parameters.faultSeconds)) s
            """)
    }
}
