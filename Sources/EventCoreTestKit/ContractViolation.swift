import EventCore

/// A failed expectation of the contract suite or the command harness: what was expected, where.
///
/// The kit throws it instead of using a test framework's assertions, so it runs under any test runner; a
/// Swift Testing test that calls into the kit fails with this description.
public struct ContractViolation: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// The source file of the failed check.
    public var file: String
    /// The line of the failed check.
    public var line: Int

    /// Creates a violation.
    public init(_ message: String, file: String = #fileID, line: Int = #line) {
        self.message = message
        self.file = file
        self.line = line
    }

    /// `file:line: message`.
    public var description: String { "\(file):\(line): \(message)" }
}

/// Throws a ``ContractViolation`` unless `condition` holds.
public func require(_ condition: Bool, _ message: @autoclosure () -> String, file: String = #fileID, line: Int = #line) throws(ContractViolation) {
    if !condition { throw ContractViolation(message(), file: file, line: line) }
}

/// Throws a ``ContractViolation`` unless `actual == expected`.
public func requireEqual<T: Equatable>(_ actual: T, _ expected: T, _ what: @autoclosure () -> String = "value", file: String = #fileID, line: Int = #line) throws(ContractViolation) {
    if actual != expected {
        throw ContractViolation("\(what()): expected \(expected), got \(actual)", file: file, line: line)
    }
}

/// Runs `body` and returns the ``EventCore/EventStoreError`` it throws; throws a ``ContractViolation`` if it
/// returns normally, throws another error, or throws a different code than `code`.
@discardableResult
public func requireStoreError<T>(
    _ code: EventStoreError.Code, file: String = #fileID, line: Int = #line, _ body: () async throws -> T
) async throws -> EventStoreError {
    do {
        let value = try await body()
        throw ContractViolation("expected an error with code \(code), got a result: \(value)", file: file, line: line)
    } catch let error as EventStoreError {
        if error.code != code {
            throw ContractViolation("expected an error with code \(code), got \(error)", file: file, line: line)
        }
        return error
    }
}
