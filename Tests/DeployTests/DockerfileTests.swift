import Fleet
import Testing

/// The Dockerfile builds `fleet` in a Swift image and runs it in a slim one.
@Suite struct DockerfileTests {
    @Test func theImageIsBuiltInTwoStages() throws {
        let text = try RepositoryFiles.text("Dockerfile")
        #expect(DeployChecks.dockerfileProblems(text, httpPort: WorkerConfiguration().httpPort) == [])
    }

    @Test func brokenVariantsAreCaught() throws {
        let text = try RepositoryFiles.text("Dockerfile")
        let port = WorkerConfiguration().httpPort
        let variants: [(String, String, String)] = [
            ("librabbitmq4 ca-certificates", "ca-certificates", "does not install librabbitmq4"),
            ("librabbitmq4 ca-certificates", "librabbitmq4 ca-certificates gcc", "installs gcc"),
            ("librabbitmq4 ca-certificates", "librabbitmq4 librabbitmq-dev", "installs librabbitmq-dev"),
            ("FROM debian:bookworm-slim AS runtime", "FROM swift:6.3-bookworm AS runtime", "runtime stage is swift"),
            ("USER 10001:10001", "USER root", "runs as root"),
            ("EXPOSE 9090", "EXPOSE 8080", "EXPOSE 9090"),
            ("--static-swift-stdlib", "", "--static-swift-stdlib"),
            ("ENTRYPOINT [\"fleet\"]", "ENTRYPOINT [\"/bin/sh\"]", "ENTRYPOINT"),
        ]
        for (original, replacement, expected) in variants {
            #expect(text.contains(original), "the variant's original text \(original) is gone from the Dockerfile")
            let problems = DeployChecks.dockerfileProblems(text.replacingOccurrences(of: original, with: replacement), httpPort: port)
            #expect(problems.contains { $0.contains(expected) }, "\(replacement): \(problems)")
        }
        // One stage only.
        let single = text.components(separatedBy: "FROM debian:bookworm-slim AS runtime")[0]
        #expect(DeployChecks.dockerfileProblems(single, httpPort: port).first?.contains("FROM stage") == true)
    }

    @Test func stagesAndPackagesAreReadLikeDocker() {
        let stages = DeployChecks.dockerStages("""
            # comment
            FROM a AS one
            RUN apt-get update \\
                && apt-get install -y --no-install-recommends x \\
                   y && rm -rf /var/lib/apt/lists/*
            from b
            RUN apt-get -q install -y z; echo done
            """)
        #expect(stages.map(\.from) == ["a AS one", "b"])
        #expect(DeployChecks.installedPackages(stages[0]) == ["x", "y"])
        #expect(DeployChecks.installedPackages(stages[1]) == ["z"])
    }
}
