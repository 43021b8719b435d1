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

        let fleet = try LocalFleet(
            count: workers, storeURL: storeURL, topologyPath: self.topology, amqpURL: amqpURL, directory: directory,
            name: "worker", orderStepTimeout: orderStepTimeout, orderDeadline: max(60, simulation.timeout))
        try await fleet.waitUntilReady(admin: admin, topology: topology)

        let report = try await SimulationDriver.run(settings: simulation.settings, topology: topology, amqpURL: amqpURL,
                                                    timeout: .seconds(simulation.timeout), logger: logger) { ended, total in
            ProgressBar.draw(ended: ended, total: total)
        }
        ProgressBar.finish()

        await fleet.stop()
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
