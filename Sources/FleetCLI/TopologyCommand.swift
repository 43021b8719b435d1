import AMQP
import ArgumentParser
import Fleet
import Foundation

/// `fleet topology`: check, complete and declare the broker topology.
struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Validate, render or declare the broker topology in topology.json.",
        subcommands: [Validate.self, Render.self, Apply.self]
    )

    struct FileOption: ParsableArguments {
        @Option(name: .long, help: "The topology file.")
        var file: String = ProcessInfo.processInfo.environment["FLEET_TOPOLOGY"] ?? "topology.json"

        func load() throws -> Topology {
            try Topology.loadForCommand(file)
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the file: every binding, route and delay level consistent.")
        @OptionGroup var file: FileOption

        func run() async throws {
            let topology = try file.load()
            print("\(file.file): \(topology.exchanges.count) exchanges, \(topology.queues.count) queues, \(topology.bindings.count) bindings, \(topology.fleet.routes.count) routes, \(topology.fleet.delay.levels) delay levels (up to \(topology.fleet.delay.maximumDelaySeconds) s): valid")
        }
    }

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the delay levels' exchanges, queues and bindings into the file from its fleet.delay section.")
        @OptionGroup var file: FileOption

        func run() async throws {
            let url = URL(fileURLWithPath: file.file)
            let data = try Data(contentsOf: url)
            // Render from the raw file: it may be invalid only because the delay entities are missing.
            let raw = try JSONDecoder().decode(RawTopology.self, from: data)
            let rendered = raw.topology.renderingDelayLevels()
            do {
                try rendered.validate()
            } catch {
                throw ValidationError(error.description)
            }
            try rendered.encoded().write(to: url)
            print("\(file.file): rendered \(rendered.fleet.delay.levels) delay levels")
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Declare every exchange, queue and binding on the broker.")
        @OptionGroup var file: FileOption
        @Option(name: .long, help: "Broker URL (or AMQP_URL).")
        var url: String = ProcessInfo.processInfo.environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"

        func run() async throws {
            let topology = try file.load()
            let connection = try await AMQPConnection.connect(url: url)
            try await topology.declare(on: connection)
            await connection.close()
            print("declared \(topology.exchanges.count) exchanges, \(topology.queues.count) queues, \(topology.bindings.count) bindings on \(connection.configuration)")
        }
    }
}

/// A topology file read without validation, for `render`.
private struct RawTopology: Decodable {
    var topology: Topology

    init(from decoder: any Decoder) throws {
        enum Keys: String, CodingKey { case exchanges, queues, bindings, policies, fleet }
        let c = try decoder.container(keyedBy: Keys.self)
        topology = Topology(
            exchanges: try c.decodeIfPresent([Topology.Exchange].self, forKey: .exchanges) ?? [],
            queues: try c.decodeIfPresent([Topology.Queue].self, forKey: .queues) ?? [],
            bindings: try c.decodeIfPresent([Topology.Binding].self, forKey: .bindings) ?? [],
            policies: try c.decodeIfPresent([Topology.Policy].self, forKey: .policies) ?? [],
            fleet: try c.decode(FleetSection.self, forKey: .fleet))
    }
}

extension Topology {
    /// Loads a topology file for a command: a file that cannot be used is a usage error naming the entry.
    static func loadForCommand(_ path: String) throws -> Topology {
        do {
            return try Topology.load(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError(error.description)
        }
    }
}
