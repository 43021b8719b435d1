import Foundation
import Testing

/// The least-privilege broker user of the compose stack and of deploy/README.md reaches exactly the names in
/// topology.json.
@Suite struct BrokerPermissionTests {
    /// The worker's permission pattern as the compose stack grants it.
    static func composePattern() throws -> String {
        let script = try RepositoryFiles.text("deploy/compose/rabbitmq-entrypoint.sh")
        let line = try #require(script.components(separatedBy: "\n").first { $0.hasPrefix("fleet_names = r\"") })
        return String(line.dropFirst("fleet_names = r\"".count).dropLast())
    }

    /// The patterns of the `rabbitmqctl set_permissions ... fleet-worker` command in deploy/README.md.
    static func documentedPatterns() throws -> [String] {
        let readme = try RepositoryFiles.text("deploy/README.md")
        let command = try #require(readme.components(separatedBy: "\n").first { $0.contains("set_permissions") && $0.contains("fleet-worker") })
        return command.components(separatedBy: "'").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
    }

    /// Every exchange and queue that topology.json declares.
    static func topologyNames() throws -> [String] {
        let topology = try #require(try RepositoryFiles.json("topology.json") as? [String: Any])
        let entities = (topology["exchanges"] as? [[String: Any]] ?? []) + (topology["queues"] as? [[String: Any]] ?? [])
        return entities.compactMap { $0["name"] as? String }
    }

    static func problems(pattern: String, names: [String]) -> [String] {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return ["\(pattern) is not a regular expression"] }
        func matches(_ name: String) -> Bool {
            regex.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        }
        var problems = names.filter { !matches($0) }.map { "\($0) is outside \(pattern)" }
        for foreign in ["amq.default", "amq.topic", "orders", "billing.fleet.orders", "domain.eventsx", "xprocess.events"] where matches(foreign) {
            problems.append("\(foreign) is inside \(pattern)")
        }
        return problems
    }

    @Test func theWorkerReachesTheTopologyAndNothingElse() throws {
        let names = try Self.topologyNames()
        #expect(names.count > 20)
        let pattern = try Self.composePattern()
        #expect(Self.problems(pattern: pattern, names: names) == [])
        let documented = try Self.documentedPatterns()
        #expect(documented.count == 3)
        // The README is read by a shell, which keeps backslashes in single quotes; the Python raw string too.
        for pattern in documented { #expect(pattern == (try Self.composePattern())) }
    }

    @Test func aTooWideOrTooNarrowPatternIsCaught() throws {
        let names = try Self.topologyNames()
        #expect(!Self.problems(pattern: ".*", names: names).isEmpty)
        #expect(!Self.problems(pattern: "^fleet\\..*$", names: names).isEmpty)
        #expect(!Self.problems(pattern: "^(fleet\\..*|domain\\.events.*|legacy\\.payments|process\\.events)", names: names).isEmpty)
    }
}
