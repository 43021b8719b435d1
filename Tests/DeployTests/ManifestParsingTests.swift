import Foundation
import Testing

/// Every YAML and JSON file of the deployment parses; the ConfigMap generator agrees with its output.
@Suite struct ManifestParsingTests {
    static var yamlFiles: [String] {
        ["docker-compose.yml"] + RepositoryFiles.files(under: "deploy", endingWith: [".yaml", ".yml"])
    }

    @Test func everyYAMLFileParses() throws {
        #expect(Self.yamlFiles.count >= 12)
        for file in Self.yamlFiles {
            let documents = try RepositoryFiles.yamlDocuments(file)
            #expect(!documents.isEmpty, "\(file) is empty")
            for document in documents { #expect(document.mapping != nil, "\(file) holds a document that is not a mapping") }
        }
        #expect(throws: (any Error).self) { try YAMLValue.documents("a: b: c") }
    }

    @Test func everyJSONFileParses() throws {
        let files = ["topology.json"] + RepositoryFiles.files(under: "deploy", endingWith: [".json"])
        #expect(files.contains("deploy/grafana/fleet-dashboard.json"))
        for file in files {
            #expect(try RepositoryFiles.json(file) is [String: Any], "\(file) is not a JSON object")
        }
    }

    /// python3 on the PATH, if any.
    static var python: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/python3" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Byte for byte, not only as JSON: `render-configmap --check` (it uses PyYAML, where installed, to read
    /// the literal block back).
    @Test(.enabled(if: python != nil, "python3 is not installed"))
    func theConfigMapIsFreshlyRendered() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(Self.python))
        process.arguments = [RepositoryFiles.url("deploy/kubernetes/render-configmap").path, "--check"]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "run deploy/kubernetes/render-configmap and commit its output")
    }
}
