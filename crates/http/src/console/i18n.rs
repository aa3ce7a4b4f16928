//! The console's two languages. Text is written in English in the code; [`tr`] gives the
//! Chinese of it (Chinese is the default: the front ends and their users are Chinese). The
//! vocabularies' labels are Chinese in the domain; [`label`] gives their English.

/// The language of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    Zh,
    En,
}

impl Lang {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// `(English, Chinese)`.
const TEXT: &[(&str, &str)] = &[
    ("API root", "API 根路径"),
    ("API token", "API 令牌"),
    ("Actions", "操作"),
    ("Add", "添加"),
    ("Add a user", "添加用户"),
    ("Added", "已添加"),
    ("Address", "地址"),
    ("Addresses", "地址数"),
    ("Back to the overview", "返回概览"),
    ("Build CTI records", "生成 CTI 记录"),
    ("Bundle", "Bundle 下载"),
    ("By level and platform", "按等级与平台统计"),
    (
        "CSV, XLSX, XLS, JSON or JSON Lines; at most",
        "支持 CSV、XLSX、XLS、JSON 或 JSON Lines；大小上限",
    ),
    ("CTI build", "CTI 生成"),
    ("CTI build started", "CTI 生成已开始"),
    ("CTI name", "CTI 名称"),
    ("CTI records", "CTI 记录"),
    ("Cancel requested.", "已请求取消。"),
    ("Cancel the conversion", "取消转换"),
    ("Chain", "上链"),
    ("Chain payload", "上链数据"),
    ("Chart", "图表"),
    ("Clear", "清除"),
    ("Client snippet", "客户端示例"),
    ("Collection", "集合"),
    ("Collections", "集合"),
    ("Columns", "列"),
    ("Columns to keep (empty: all)", "保留的列（留空：全部）"),
    ("Conversion", "转换"),
    ("Conversion started", "转换已开始"),
    ("Convert to STIX 2.1", "转换为 STIX 2.1"),
    (
        "Counted over the first 256 MiB of the file.",
        "仅统计了文件的前 256 MiB。",
    ),
    ("Created", "创建时间"),
    ("Dataset", "数据集"),
    ("Dataset file", "数据集文件"),
    ("Dataset files waiting", "待发布的数据集文件"),
    ("Dataset type", "数据类型"),
    ("Datasets", "数据集"),
    ("Description", "描述"),
    ("Done", "已完成"),
    ("Download as a STIX bundle", "下载 STIX Bundle"),
    (
        "Drop a file here, or choose one:",
        "拖放文件到此处，或选择文件：",
    ),
    ("Errors and rejected rows", "错误与被拒绝的行"),
    ("File", "文件"),
    ("Files", "文件"),
    ("Filter", "筛选"),
    ("First reported", "首次上报"),
    ("Format", "格式"),
    ("Free space", "可用空间"),
    ("Grant", "授权"),
    ("Handling", "处置状态"),
    ("Hash", "哈希"),
    ("Hidden dangers", "隐患"),
    ("Hidden-danger revisions waiting", "待发布的隐患修订"),
    (
        "IOC kinds (none ticked: those found)",
        "IOC 类型（不选：自动识别）",
    ),
    ("Incentive mechanism", "激励机制"),
    ("Indicators", "指标（Indicator）"),
    ("Issue", "隐患"),
    ("Jobs", "任务"),
    ("Label column or labels", "标签列或标签"),
    ("Last 24 hours", "最近 24 小时"),
    ("Level", "等级"),
    ("Located with", "定位数据库"),
    ("Location", "位置"),
    ("Manage users and grants", "管理用户与授权"),
    (
        "Mapping file (in the data directory's mappings/)",
        "映射文件（数据目录的 mappings/ 中）",
    ),
    ("May write to", "可写入"),
    ("Name", "名称"),
    (
        "Name (1-10 characters, not starting with a digit)",
        "名称（1-10 个字符，不以数字开头）",
    ),
    ("New token for", "已为其生成新令牌："),
    ("New token of", "新令牌："),
    ("Newest added", "最近添加"),
    ("Next", "下一页"),
    (
        "No STIX files yet: convert the dataset first.",
        "尚无 STIX 文件：请先转换数据集。",
    ),
    (
        "No address could be located (private addresses, or no GeoIP database).",
        "没有可定位的地址（私有地址，或未配置 GeoIP 数据库）。",
    ),
    ("No conversion has run yet.", "尚未运行转换。"),
    ("No hidden danger matches.", "没有符合条件的隐患。"),
    ("No users yet.", "尚无用户。"),
    ("Node", "节点"),
    ("Nothing to show.", "暂无数据。"),
    ("Nothing uploaded yet.", "尚未上传数据集。"),
    ("Objects", "对象"),
    ("Objects by type", "按类型统计对象"),
    ("Occurrences", "出现次数"),
    ("Occurrences by country", "按国家统计出现次数"),
    ("On chain", "已上链"),
    ("Open source", "是否开源"),
    ("Overview", "概览"),
    ("Page", "第"),
    ("Pages", "分页"),
    ("Platform", "平台"),
    ("Previous", "上一页"),
    ("Progress", "进度"),
    ("Raw event", "原始事件"),
    ("Readers and writers", "读者与写入者"),
    ("Readiness", "就绪状态"),
    ("Reads up to", "可读等级"),
    ("Records", "记录库"),
    ("Rejected rows", "被拒绝的行"),
    ("Remove", "删除"),
    (
        "Remove this user? Its hidden dangers are kept.",
        "删除该用户？其上报的隐患会保留。",
    ),
    ("Reports marked", "上报标记"),
    ("Reports received", "收到的上报"),
    ("Revision", "修订"),
    ("Revisions", "修订记录"),
    ("Revoke", "撤销"),
    ("Risk id", "隐患 ID"),
    ("Rotate token", "更换令牌"),
    ("Rows", "行数"),
    ("Rows converted", "已转换行数"),
    ("Rows per STIX file", "每个 STIX 文件的行数"),
    ("Run time", "运行时间"),
    ("STIX", "STIX"),
    ("STIX file", "STIX 文件"),
    ("STIX files", "STIX 文件"),
    ("Sections", "栏目"),
    ("Set", "设置"),
    (
        "Shown once: copy it now. The node keeps it only to check signs and TAXII sign-ins.",
        "仅显示一次：请立即复制。节点只用它校验签名和 TAXII 登录。",
    ),
    ("Sign in", "登录"),
    ("Sign out", "退出登录"),
    ("Since (RFC 3339 or ms)", "起始时间（RFC 3339 或毫秒）"),
    ("Size", "大小"),
    ("Something went wrong", "出错了"),
    ("Speed", "速度"),
    ("Start the conversion", "开始转换"),
    ("Statistics", "统计"),
    ("Storage", "存储"),
    ("Stored", "已存储"),
    ("TAXII", "TAXII"),
    ("TAXII publishing", "TAXII 发布"),
    ("TLP marking", "TLP 标记"),
    ("Tags (none ticked: the type's)", "标签（不选：按数据类型）"),
    ("Task", "任务"),
    ("Task steps", "任务步骤"),
    (
        "The form expired or did not come from this console; reload the page and try again.",
        "表单已过期或并非来自本控制台；请刷新页面后重试。",
    ),
    (
        "This node has an API token: sign in with it.",
        "本节点设置了 API 令牌：请用它登录。",
    ),
    ("Time left", "剩余时间"),
    ("Token set", "令牌设置时间"),
    ("Top addresses", "出现最多的地址"),
    ("Top locations", "出现最多的位置"),
    ("Type", "类型"),
    ("Type (empty: each file's)", "类型（留空：按各文件）"),
    ("Unit", "单位"),
    ("Until (RFC 3339 or ms)", "截止时间（RFC 3339 或毫秒）"),
    ("Updated", "更新时间"),
    ("Upload", "上传"),
    ("Upload a dataset", "上传数据集"),
    ("Uploaded", "上传时间"),
    ("Uptime", "运行时长"),
    ("User", "用户"),
    ("Users", "用户"),
    ("Value", "积分"),
    (
        "Value (points; empty: the node's default)",
        "积分（留空：节点默认值）",
    ),
    ("Verification", "核验状态"),
    ("Version", "版本"),
    ("View", "查看"),
    (
        "What the publisher has not yet put into the TAXII collections.",
        "发布器尚未写入 TAXII 集合的内容。",
    ),
    ("Where the addresses are", "地址分布"),
    ("Writable", "可写"),
    ("Wrong token.", "令牌错误。"),
    ("all writable collections", "全部可写集合"),
    (
        "anonymous readers get TLP:CLEAR objects",
        "匿名读者可读取 TLP:CLEAR 对象",
    ),
    ("any", "任意"),
    ("canceled", "已取消"),
    ("closed", "不开源"),
    ("delimiter", "分隔符"),
    ("failed", "失败"),
    ("files", "个文件"),
    ("finished", "已完成"),
    ("in all", "共计"),
    ("no", "否"),
    ("not ready", "未就绪"),
    ("open", "开源"),
    ("pending", "等待中"),
    ("queued", "排队中"),
    (
        "readers sign in with a user's token",
        "读者使用用户令牌登录",
    ),
    ("ready", "就绪"),
    ("rows", "行"),
    ("running", "运行中"),
    ("succeeded", "成功"),
    ("tab", "制表符"),
    ("the default mapping", "默认映射"),
    ("the node's default", "节点默认值"),
    (
        "the type's rule; none; or ipv4-addr, domain-name, …",
        "按数据类型的规则；none；或 ipv4-addr, domain-name, …",
    ),
    ("yes", "是"),
];

/// The vocabularies' Chinese labels and their English: `(English, Chinese)`.
const LABELS: &[(&str, &str)] = &[
    ("Malicious traffic", "恶意流量"),
    ("Honeypot", "蜜罐情报"),
    ("Botnet", "僵尸网络"),
    ("Application-layer attack", "应用层攻击"),
    ("Open-source intelligence", "开源情报"),
    ("Info", "信息"),
    ("Low", "低危"),
    ("Medium", "中危"),
    ("High", "高危"),
    ("Critical", "紧急"),
];

/// The text in the page's language (English text without a translation stays English).
pub(crate) fn tr(lang: Lang, english: &str) -> &str {
    match lang {
        Lang::En => english,
        Lang::Zh => TEXT
            .iter()
            .find(|(en, _)| *en == english)
            .map(|(_, zh)| *zh)
            .unwrap_or(english),
    }
}

/// A vocabulary's (Chinese) label in the page's language.
pub(crate) fn label(lang: Lang, chinese: &'static str) -> &'static str {
    match lang {
        Lang::Zh => chinese,
        Lang::En => LABELS
            .iter()
            .find(|(_, zh)| *zh == chinese)
            .map(|(en, _)| *en)
            .unwrap_or(chinese),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every literal the console's code passes to `tr` has its Chinese, and no entry is
    /// there twice.
    #[test]
    fn every_text_has_its_chinese() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("pages.rs"),
            include_str!("admin.rs"),
            include_str!("charts.rs"),
        ];
        let mut missing = Vec::new();
        let mut checked = 0;
        for src in sources {
            let flat = src.split_whitespace().collect::<Vec<_>>().join(" ");
            for (i, _) in flat.match_indices("tr(") {
                let before = flat[..i].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue; // `str(`, `attr(`, `i18n::tr(` is the same function
                }
                let rest = &flat[i + 3..];
                let Some(arg) = ["lang, \"", "session.lang, \"", "lang,\""]
                    .iter()
                    .find_map(|p| rest.strip_prefix(p))
                else {
                    continue;
                };
                let text = &arg[..arg.find('"').expect("a closed literal")];
                checked += 1;
                if !TEXT.iter().any(|(en, _)| *en == text) {
                    missing.push(text.to_string());
                }
            }
        }
        for (_, label) in super::super::NAV {
            if !TEXT.iter().any(|(en, _)| *en == label) {
                missing.push(label.to_string());
            }
        }
        assert!(checked > 150, "the scan found only {checked} texts");
        assert!(missing.is_empty(), "no Chinese for: {missing:?}");
        let mut seen = std::collections::HashSet::new();
        for (en, _) in TEXT {
            assert!(seen.insert(en), "{en:?} is listed twice");
        }
    }

    #[test]
    fn words_of_the_states_and_labels_translate() {
        assert_eq!(tr(Lang::Zh, "succeeded"), "成功");
        assert_eq!(tr(Lang::En, "succeeded"), "succeeded");
        assert_eq!(label(Lang::En, "蜜罐情报"), "Honeypot");
        assert_eq!(label(Lang::Zh, "蜜罐情报"), "蜜罐情报");
    }
}
