/// A topology file that cannot be used, with the entry at fault.
public struct TopologyError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The entry at fault, e.g. `binding domain.events -> fleet.orders` or `queue fleet.orders`.
    public var entry: String
    /// What is wrong with it.
    public var problem: String

    /// Creates an error about `entry`.
    public init(entry: String, problem: String) {
        self.entry = entry
        self.problem = problem
    }

    public var description: String { "topology: \(entry): \(problem)" }
}
