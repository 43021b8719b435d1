import AMQP
import ArgumentParser
import Fleet
import Foundation

/// `fleet topology`: the file's commands (validate, render, apply) and the live broker's (diff, export).
struct OperatorTopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Validate, render, declare, compare or export the broker topology.",
        subcommands: [TopologyCommand.Validate.self, TopologyCommand.Render.self, TopologyCommand.Apply.self, Diff.self, Export.self]
    )

    /// Where the live definitions come from.
    struct LiveOptions: ParsableArguments {
        @OptionGroup var broker: BrokerOptions
        @Option(help: "The RabbitMQ management API (default: http://<broker host>:15672).") var managementURL: String?

        func fetch() async throws -> BrokerDefinitions {
            let configuration: AMQPConfiguration
            do { configuration = try AMQPConfiguration(url: broker.amqpURL) } catch {
                throw OperationsError(.invalidArgument, "bad broker URL: \(error)")
            }
            let management = try managementURL.map { text in
                guard let url = URL(string: text), url.scheme == "http" || url.scheme == "https" else {
                    throw OperationsError(.invalidArgument, "--management-url must be an http(s) URL, not \"\(text)\"")
                }
                return url
            }
            return try await BrokerDefinitions.fetch(configuration: configuration, managementURL: management)
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show how the live broker differs from the file (exit 1 when it does).")
        @OptionGroup var file: TopologyCommand.FileOption
        @OptionGroup var live: LiveOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await Operator.run {
                let topology = try file.load()
                let difference = try await live.fetch().difference(from: topology)
                if json {
                    try Operator.printJSON(difference)
                } else if difference.isEmpty {
                    print("the broker matches \(file.file)")
                } else {
                    for line in difference.missing { print("- \(line)  (in the file, not on the broker)") }
                    for line in difference.extra { print("+ \(line)  (on the broker, not in the file)") }
                    for line in difference.changed { print("~ \(line)") }
                }
                if !difference.isEmpty { throw ExitCode(1) }
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the live exchanges, queues and bindings in the RabbitMQ definitions format.",
            discussion: "With --file pointing at a topology file, its fleet section is added so the output is a complete topology file.")
        @OptionGroup var live: LiveOptions
        @Option(help: "A topology file whose fleet section to include.") var file: String?
        @Option(name: .shortAndLong, help: "Write here instead of standard output.") var output: String?

        func run() async throws {
            try await Operator.run {
                let fleet = try file.map { path in
                    do { return try Topology.load(contentsOf: URL(fileURLWithPath: path)).fleet } catch {
                        throw OperationsError(.invalidArgument, "\(error)")
                    }
                }
                let data = try await live.fetch().encoded(fleet: fleet)
                if let output {
                    try data.write(to: URL(fileURLWithPath: output), options: .atomic)
                    print("wrote \(output)")
                } else {
                    print(String(decoding: data, as: UTF8.self))
                }
            }
        }
    }
}
