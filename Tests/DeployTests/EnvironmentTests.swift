import Fleet
import Testing

/// Every FLEET_* variable that the deployment files set is one the worker reads.
@Suite struct EnvironmentTests {
    static var deploymentFiles: [String] {
        ["Dockerfile", "docker-compose.yml", "deploy/compose/example.env"]
            + RepositoryFiles.files(under: "deploy", endingWith: [".yaml", ".yml", ".conf", ".sh"])
    }

    @Test func everyVariableIsAWorkerKey() throws {
        var seen: Set<String> = []
        for file in Self.deploymentFiles {
            let text = try RepositoryFiles.text(file)
            #expect(DeployChecks.unknownVariables(in: text, file: file) == [])
            seen.formUnion(DeployChecks.fleetVariables(in: text))
        }
        // The files do configure the worker: the scan is not vacuous.
        #expect(seen.isSuperset(of: ["FLEET_AMQP_URL", "FLEET_STORE_URL", "FLEET_AMQP_URL_FILE", "FLEET_STORE_URL_FILE",
                                     "FLEET_TOPOLOGY", "FLEET_HTTP_HOST", "FLEET_HTTP_PORT", "FLEET_SHUTDOWN_GRACE_SECONDS"]))
    }

    @Test func unknownVariablesAreCaught() {
        #expect(DeployChecks.unknownVariables(in: "FLEET_AMQP_URI: amqp://", file: "x") == ["x: FLEET_AMQP_URI is not a worker key"])
        #expect(DeployChecks.unknownVariables(in: "- name: FLEET_STORE_URL_FILE\n  FLEET_HTTP_PORT=9090", file: "x") == [])
        #expect(DeployChecks.unknownVariables(in: "image: ${PROCESSFLEET_IMAGE}", file: "x") == [])
        #expect(DeployChecks.unknownVariables(in: "FLEET_TOPOLOGY_FILE_FILE", file: "x").count == 1)
    }
}
