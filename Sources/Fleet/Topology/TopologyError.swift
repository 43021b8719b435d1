/// A topology file that cannot be used, with the entry at fault.
public struct TopologyError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The entry at fault, e.g. `binding domain.events -> fleet.orders` or `queue fleet.orders`.
    public var entry: String
    /// What is wrong with it.
    public var problem: String

    /// Creates an error about `entry`. Both texts are shortened to 1,000 characters and their control characters
    /// escaped, so that a hostile file (a name of a megabyte, a newline in a name) cannot flood or forge log lines.
    public init(entry: String, problem: String) {
        self.entry = Self.printable(entry)
        self.problem = Self.printable(problem)
    }

    static func printable(_ text: String) -> String {
        let limit = 1_000
        let shortened = text.count > limit ? "\(text.prefix(limit))… (\(text.count) characters in all)" : text
        guard shortened.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return shortened }
        return String(String.UnicodeScalarView(shortened.unicodeScalars.flatMap { scalar in
            scalar.properties.generalCategory == .control ? Array(scalar.escaped(asASCII: true).unicodeScalars) : [scalar]
        }))
    }

    public var description: String { "topology: \(entry): \(problem)" }
}
