import ArgumentParser

/// The `fleet` command: runs and operates a fleet of process workers.
@main
struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Runs long-running business processes from RabbitMQ on an event store.",
        subcommands: [WorkerCommand.self, DemoCommand.self, BenchCommand.self, SimulatorCommand.self, OperatorTopologyCommand.self,
                      DeadLetterCommand.self, ReplayCommand.self, ProcessCommand.self, TimeoutsCommand.self]
    )
}
