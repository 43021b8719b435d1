import AMQP
import ArgumentParser
import Fleet
import Foundation
import Logging
import FleetSimulation

/// `fleet demo`: a small fleet on the embedded store, driven by the simulated services.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start worker processes on the embedded SQLite store and drive them with the simulated services.",
        discussion: """
            The demo purges the fleet's queues first (it owns the broker it is pointed at), starts the workers with \
            short process timeouts, runs the simulator with a progress bar, stops the workers with SIGTERM, and \
            prints what happened. Exits 1 when a process did not end as expected.
            """
    )

    @Option(help: "Worker processes to start.") var workers: Int = 1
    @Option(help: "Broker URL.") var amqpURL: String = ProcessInfo.processInfo.environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Event store of the workers (a new SQLite file by default).") var store: String?
    @Option(help: "Topology file.") var topology: String = "topology.json"
    @Option(help: "Folder for the store and the workers' logs.") var directory: String = ".fleet-demo"
    @Option(help: "Seconds an order step may take before its timeout fires.") var orderStepTimeout: Int = 3
    @OptionGroup var simulation: SimulationOptions

    func validate() throws {
        guard (1...16).contains(workers) else { throw ValidationError("--workers must be between 1 and 16") }
    }

    func run() async throws {
        let topology = try Topology.loadForCommand(self.topology)
        let logger = Logger(label: "fleet.demo")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let storeURL: String
        if let store {
            storeURL = store
        } else {
            storeURL = "\(directory)/demo.sqlite"
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: storeURL + suffix) }
        }

        let admin = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        try await topology.declare(on: admin)
        var purged: UInt32 = 0
        for queue in topology.queues where queue.queueType != "stream" {
            purged += try await admin.purgeQueue(queue.name)
        }
        print("fleet demo: \(workers) worker(s) on \(storeURL), broker \(admin.configuration); purged \(purged) old messages")

        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var processes: [Process] = []
        for index in 0..<workers {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = [
                "worker", "--store", storeURL, "--topology", self.topology, "--amqp-url", amqpURL,
                "--http-port", "0", "--worker-id", "demo-worker-\(index + 1)",
                "--order-step-timeout", String(orderStepTimeout), "--order-retries", "2", "--order-retry-delay", "1",
                "--order-deadline", String(max(60, simulation.timeout)),
            ]
            var environment = ProcessInfo.processInfo.environment
            environment["FLEET_LOG_LEVEL"] = environment["FLEET_LOG_LEVEL"] ?? "warning"
            process.environment = environment
            let log = "\(directory)/worker-\(index + 1).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            processes.append(process)
        }
        defer {
            for process in processes where process.isRunning { process.terminate() }
        }

        // Ready when every worker consumes every routed queue.
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            var ready = true
            for route in topology.fleet.routes {
                let state = try await admin.declare(QueueDeclaration(name: route.queue), passive: true)
                if state.consumerCount < UInt32(workers) { ready = false }
            }
            if ready { break }
            if ContinuousClock.now > deadline || processes.contains(where: { !$0.isRunning }) {
                throw ValidationError("the workers did not start; see \(directory)/worker-*.log")
            }
            try await Task.sleep(for: .milliseconds(200))
        }

        let report = try await SimulationDriver.run(settings: simulation.settings, topology: topology, amqpURL: amqpURL,
                                                    timeout: .seconds(simulation.timeout), logger: logger) { ended, total in
            ProgressBar.draw(ended: ended, total: total)
        }
        ProgressBar.finish()

        for process in processes { process.terminate() }
        for process in processes { process.waitUntilExit() }
        var deadLetters: UInt32 = 0
        for _ in 0..<50 {
            deadLetters = try await admin.declare(QueueDeclaration(name: topology.fleet.deadLetterQueue), passive: true).messageCount
            if deadLetters >= UInt32(report.poisonMessages) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        await admin.close()

        print(report.summary)
        print("dead letters: \(deadLetters) (\(report.poisonMessages) sent on purpose); workers' logs in \(directory)/")
        if !report.mismatches.isEmpty || !report.finished || deadLetters != UInt32(report.poisonMessages) { throw ExitCode(1) }
    }
}
