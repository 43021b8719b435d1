import ArgumentParser
import Fleet
import Foundation
import Logging
import FleetSimulation

/// `fleet simulator`: the example domain's external services against a running fleet.
struct SimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulator",
        abstract: "Simulate payments, inventory, shipping and travel providers against a running fleet.",
        discussion: "Exits 0 when every process ended as the simulator expected, 1 otherwise."
    )

    @Option(help: "Broker URL (FLEET_AMQP_URL).") var amqpURL: String = ProcessInfo.processInfo.environment["FLEET_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Topology file (FLEET_TOPOLOGY).") var topology: String = ProcessInfo.processInfo.environment["FLEET_TOPOLOGY"] ?? "topology.json"
    @Flag(help: "Print the summary as JSON.") var json = false
    @OptionGroup var simulation: SimulationOptions

    func run() async throws {
        let topology = try Topology.loadForCommand(self.topology)
        let logger = Logger(label: "fleet.simulator")
        let report = try await SimulationDriver.run(settings: simulation.settings, topology: topology, amqpURL: amqpURL,
                                                    timeout: .seconds(simulation.timeout), logger: logger) { ended, total in
            ProgressBar.draw(ended: ended, total: total)
        }
        ProgressBar.finish()
        print(report.summary)
        if !report.mismatches.isEmpty || !report.finished { throw ExitCode(1) }
    }
}

/// A one-line progress bar on standard error (nothing when it is not a terminal).
enum ProgressBar {
    static func draw(ended: Int, total: Int) {
        guard isatty(STDERR_FILENO) == 1, total > 0 else { return }
        let width = 40
        let filled = min(width, width * ended / total)
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(ended)/\(total) processes ended".utf8))
    }

    static func finish() {
        guard isatty(STDERR_FILENO) == 1 else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
