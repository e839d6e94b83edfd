"""The console's Chinese (zh-CN) wording, kept as data: `python scripts/translations_zh.py` extracts
the messages (pybabel), fills loyalty/translations/zh (Simplified Chinese, zh-CN; gettext finds it for zh_Hans_CN) from this table, and compiles both catalogs.
tests/unit/test_console_catalogs.py fails when a message has no Chinese."""
import os
import subprocess
import sys

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSLATIONS = os.path.join(ROOT, "loyalty", "translations")

ZH = {
    "The email or the password is wrong.": "邮箱或密码错误。",
    "Too many wrong passwords: this account is locked for 15 minutes. Try again later or ask an admin to "
    "reset the password.": "密码错误次数过多：此账号已锁定 15 分钟。请稍后再试，或请管理员重置密码。",
    "Some fields are missing or invalid; see the messages next to them.": "有字段缺失或无效，请查看字段旁的提示。",
    "Dashboard": "仪表盘", "Members": "会员", "Tiers": "会员等级", "Earning rules": "积分规则",
    "Referrals": "推荐", "Rewards": "奖励", "Segments": "会员分群", "Audit log": "审计日志",
    "Webhooks": "Webhook", "Jobs": "定时任务", "API keys": "API 密钥",
    "Your role may not open this page; ask an admin.": "您的角色无权打开此页面，请联系管理员。",
    "There is nothing at this address.": "此地址没有内容。",
    "The form expired or was not sent by this console; open the page again and resend it.":
        "表单已过期或并非由本控制台提交，请重新打开页面后再提交。",
    "potential": "潜在", "new": "新客", "active": "活跃", "dormant": "沉睡", "churned": "流失", "unknown": "未知",
    "high_value": "高价值", "low_value": "低价值", "at_risk": "流失风险", "marketing": "市场", "admin": "管理员",
    "pos": "收银", "app": "应用", "closed": "已关闭", "merged": "已合并",
    "earn_purchase": "消费积分", "earn_activity": "行为积分", "bonus": "奖励积分", "redeem": "兑换",
    "payment": "积分抵现", "expire": "过期", "reverse": "冲回", "adjust": "调整", "clawback": "追回",
    "refund": "退款", "release": "解冻", "cancel": "取消", "completed": "已完成", "cancelled": "已取消",
    "pending": "待处理", "delivered": "已送达", "dead": "已失败", "running": "进行中", "succeeded": "成功",
    "failed": "失败", "skipped": "已跳过", "goods": "实物", "service": "服务", "coupon": "优惠券",
    "cash_voucher": "代金券", "month": "每月", "ever": "永久", "never": "永不过期",
    "days_after_available": "可用后 N 天", "end_of_month": "月底", "end_of_year": "年底",
    "Loyalty console": "会员积分管理后台", "Main": "主导航", "Sign out": "退出登录",
    "Outstanding points": "未兑付积分", "Money value": "折合金额", "Expiring in 30 days": "30 天内过期",
    "Members by tier": "各等级会员数", "Tier": "等级", "Members by lifecycle stage": "各生命周期阶段会员数",
    "Stage": "阶段", "Points earned and burned per day (30 days)": "每日积分发放与消耗（30 天）",
    "The numbers": "明细数据", "Day": "日期", "Earned": "发放", "Burned": "消耗",
    "Points liability by expiry month": "按过期月份的积分负债", "Month": "月份", "Points": "积分",
    "Never expire": "永不过期", "Total": "合计", "Referral funnel": "推荐漏斗", "Invited": "已邀请",
    "Qualified": "已达标", "Rewarded": "已奖励", "Pending": "待定", "Points granted": "已发放积分",
    "No referral campaign is running.": "当前没有进行中的推荐活动。", "Last 30 days": "最近 30 天",
    "Redeemed": "已兑换", "Paid at the till": "收银抵现", "Expired": "已过期", "Adjusted": "已调整",
    "Points per currency unit": "每元积分", "Minimum purchase amount": "最低消费金额",
    "Pending days (return window)": "冻结天数（退货期）", "Expiry": "过期", "Expiry days (for days after available)":
        "有效天数（用于“可用后 N 天”）", "Points that pay one currency unit at the till": "抵扣 1 元所需积分",
    "Excluded categories (comma-separated)": "不积分的品类（逗号分隔）", "Excluded SKUs (comma-separated)":
        "不积分的 SKU（逗号分隔）", "Save earning rules": "保存积分规则", "Activity points": "行为积分",
    "Activity": "行为", "Cap": "上限", "Back to the dashboard": "返回仪表盘", "First page": "第一页",
    "Next page": "下一页", "Choose a new password": "设置新密码",
    "You signed in with a one-time password: choose your own before you go on.": "您使用的是一次性密码登录，请先设置自己的密码。",
    "Current password": "当前密码", "New password": "新密码", "At least 10 characters.": "至少 10 个字符。",
    "New password again": "再次输入新密码", "Save the new password": "保存新密码", "Sign in": "登录",
    "Email": "邮箱", "Password": "密码",
    "The ladder must stay in order: each tier needs more than the one below it.": "等级必须保持顺序：每个等级的门槛都要高于下一级。",
    "Name": "名称", "Qualifying spend": "达标消费额", "Qualifying activities": "达标互动次数", "Combine": "组合方式",
    "both thresholds": "两项都满足", "either threshold": "满足任一项", "Earn multiplier": "积分倍率",
    "Birthday points": "生日积分", "Service level": "服务等级", "Perks (comma-separated)": "权益（逗号分隔）",
    "Save tier": "保存等级", "Key %(id)s created. It is shown only this once; copy it now:":
        "密钥 %(id)s 已创建。它只显示这一次，请立即复制：", "Role": "角色", "Store": "门店", "Key starts": "密钥开头",
    "State": "状态", "revoked": "已吊销", "Revoke": "吊销", "New key": "新建密钥", "Store (POS keys only)": "门店（仅收银密钥）",
    "Create key": "创建密钥", "Entity": "对象", "Action": "操作", "Actor": "操作人", "Filter": "筛选", "When": "时间",
    "Before": "修改前", "After": "修改后", "Nothing recorded.": "暂无记录。", "Deliveries": "投递记录",
    "Replay every dead delivery": "重发所有失败的投递", "Event": "事件", "Status": "状态", "Attempts": "尝试次数",
    "Last error": "最近错误", "Next attempt": "下次尝试", "Replay": "重发", "No deliveries.": "暂无投递。",
    "Job": "任务", "Schedule": "计划", "Last run": "上次运行", "Outcome": "结果", "Run now": "立即运行",
    "Latest runs": "最近运行", "Started": "开始", "Finished": "结束", "Summary": "摘要", "Description": "说明",
    "Active": "启用", "Delivered": "已送达", "Dead": "已失败", "yes": "是", "no": "否", "No subscriptions.": "暂无订阅。",
    "Ambassador": "推荐大使", "Profile": "资料", "Phone": "手机", "Birthday": "生日", "Joined": "注册时间",
    "Lifecycle stage": "生命周期阶段", "Value segment": "价值分群", "Available": "可用", "Debt": "欠分",
    "Earned in all": "累计获得", "Nothing expires.": "没有即将过期的积分。", "since": "自", "at least until": "至少保持到",
    "Guaranteed": "保级", "Activities": "互动次数", "To reach %(tier)s": "升至%(tier)s还需", "spend": "消费",
    "activities": "互动", "Code": "推荐码", "Tags": "标签", "Remove tag %(tag)s": "移除标签 %(tag)s",
    "No tags.": "暂无标签。", "New tag": "新标签", "Add tag": "添加标签", "History": "积分明细", "Type": "类型",
    "Balance": "余额", "No entries yet.": "暂无记录。", "Redemptions": "兑换记录", "Reward": "奖励", "Quantity": "数量",
    "No redemptions.": "暂无兑换。", "Actions": "操作", "Adjust points": "调整积分",
    "Points (negative to remove)": "积分（负数为扣减）", "Reason": "原因", "Adjust": "调整", "Set tier": "设置等级",
    "Guaranteed until": "保级至", "Merge another record into this member": "将另一条记录合并到此会员",
    "The other member's id": "另一会员的 ID", "Merge": "合并",
    "Adjusting points, setting a tier and merging are for admins.": "调整积分、设置等级与合并仅限管理员。",
    "Phone, member number, email or card token": "手机号、会员号、邮箱或会员卡码", "Find": "查找",
    "Member number": "会员号", "Edit referral campaign": "编辑推荐活动", "New referral campaign": "新建推荐活动",
    "Referrer points": "推荐人积分", "New member points": "新会员积分", "Starts": "开始时间", "Empty: now": "留空：立即开始",
    "Ends": "结束时间", "Empty: runs until stopped": "留空：直到手动停止", "Minimum first purchase": "首单最低金额",
    "First purchase within (days)": "首单期限（天）", "Return window (days)": "退货期（天）",
    "Most rewards per referrer": "每位推荐人最多奖励次数", "Qualified referrals to become an ambassador": "成为推荐大使所需达标推荐数",
    "Ambassador bonus points": "推荐大使奖励积分", "Link template (with {code})": "链接模板（含 {code}）",
    "Save campaign": "保存活动", "Create campaign": "创建活动", "Campaign": "活动", "Runs": "时间", "Conversion": "转化率",
    "Edit": "编辑", "Stop": "停止", "No campaigns yet.": "暂无活动。", "Edit reward": "编辑奖励", "New reward": "新建奖励",
    "Kind": "类型", "Points cost": "所需积分", "Cash value (cash vouchers)": "面值（代金券）",
    "Stock (empty: unlimited)": "库存（留空为不限）", "Limit per member": "每人限兑", "Limit period": "限兑周期",
    "Minimum tier": "最低等级", "On offer from": "上架时间", "On offer until": "下架时间", "Voucher valid (days)": "券有效期（天）",
    "On offer": "上架", "Save reward": "保存奖励", "Add reward": "添加奖励", "Stock": "库存", "Per member": "每人限兑",
    "unlimited": "不限", "The catalog is empty.": "奖励目录为空。", "Lifecycle stages": "生命周期阶段",
    "Value segments": "价值分群", "Segment": "分群", "Download CSV": "下载 CSV", "Available points": "可用积分",
    "Spend, 12 months": "近 12 个月消费", "Last purchase": "最近消费", "Nobody is in this segment.": "此分群暂无会员。",
    "%(count)s dead deliveries will be sent again.": "%(count)s 条失败的投递将重新发送。",
    "The delivery will be sent again.": "该投递将重新发送。", "There is no such job.": "没有这个任务。",
    "%(job)s: %(outcome)s.": "%(job)s：%(outcome)s。", "API key revoked.": "API 密钥已吊销。",
    "No member matches %(query)s.": "没有会员匹配 %(query)s。", "Points adjusted.": "积分已调整。",
    "Tags saved.": "标签已保存。", "Tier set.": "等级已设置。", "Member merged into this one.": "已合并到此会员。",
    "Tier saved.": "等级已保存。", "Earning rules saved.": "积分规则已保存。", "Referral campaign created.": "推荐活动已创建。",
    "Referral campaign saved.": "推荐活动已保存。", "Referral campaign stopped.": "推荐活动已停止。",
    "Missing data for required field.": "必填项。", "Not a valid integer.": "不是有效的整数。",
    "Not a valid number.": "不是有效的数字。", "Not a valid date.": "不是有效的日期。",
    "Not a valid datetime.": "不是有效的日期时间。", "Must be greater than 0.": "必须大于 0。", "Must not be 0.": "不能为 0。",
    "Must not be negative.": "不能为负数。", "Must have at most 2 decimal places.": "最多两位小数。",
    "Must be a number.": "必须是数字。", "Must be a decimal number such as 120.5, in ASCII digits.":
        "必须是数字，例如 120.5（半角数字）。", 'Must be a decimal string such as "199.00".': "必须是金额，例如 199.00。",
    "Reward added to the catalog.": "奖励已加入目录。", "Later expiry dates": "更晚的过期日期", "Reward saved.": "奖励已保存。",
    # Promotions (issue 16 in the console)
    "Promotions": "促销活动", "Active promotions": "进行中的促销活动", "Promotion": "促销活动", "Effect": "奖励方式",
    "Until stopped": "直到停止", "No promotion is active.": "目前没有进行中的促销活动。", "New promotion": "新建促销活动",
    "%(value)s× points": "%(value)s 倍积分", "+%(points)s points a purchase": "每笔消费额外 +%(points)s 积分",
    "%(points)s points per %(per)s spent": "每消费 %(per)s 送 %(points)s 积分", "Edit promotion": "编辑促销活动",
    "This promotion was stopped and cannot change; create a new one.": "此促销活动已停止，不能再修改；请新建一个。",
    "The promotion": "活动信息", "Effect type": "奖励类型",
    "Multiplier (multiplier: 2 gives double points)": "倍数（倍数积分：2 即双倍积分）",
    "Points (bonus: a purchase; per amount: per the amount below)": "积分（固定奖励：每笔消费；按金额：每满下方金额）",
    "Per amount (per amount)": "每满金额（按金额送积分）", "Weekly schedule (empty: all the time)": "每周时段（留空：全天候）",
    "Days of the week": "星期", "From (local time)": "开始时间（当地时间）", "Until (local time)": "结束时间（当地时间）",
    "Earlier than From: the window crosses midnight": "早于开始时间：时段跨越午夜",
    "Scope (empty: every purchase)": "适用范围（留空：所有消费）", "Stores": "门店",
    "Store ids, separated by commas": "门店编号，用逗号分隔", "Channels": "渠道",
    "store, online, mini_program..., separated by commas": "store、online、mini_program 等，用逗号分隔",
    "Member tags": "会员标签", "A member with any of them; separated by commas": "会员拥有其中任一标签即可；用逗号分隔",
    "Item categories": "商品品类", "Only matching items' amount counts; separated by commas": "只计算匹配商品的金额；用逗号分隔",
    "Item SKUs": "商品 SKU", "Minimum qualifying amount": "最低参与金额", "First purchase only": "仅限首次消费",
    "Limits (empty: none)": "限制（留空：不限）", "Purchases per member": "每位会员可享次数", "Per": "周期",
    "Budget (points in all)": "预算（积分总数）", "With other promotions": "与其他活动的关系", "Stacking": "叠加方式",
    "Priority": "优先级", "Higher first; of several exclusive promotions, the highest applies alone":
        "数字大者优先；多个互斥活动中只有优先级最高的生效",
    "Save promotion": "保存促销活动", "Create promotion": "创建促销活动", "Back to the promotion": "返回促销活动",
    "Simulate a basket": "模拟购物篮", "All": "全部", "Show": "显示", "No promotions here yet.": "这里还没有促销活动。",
    "All promotions": "所有促销活动", "Terms": "活动条款", "Stopped": "停止时间", "Weekly schedule": "每周时段",
    "Every day": "每天", "All the time": "全天候", "Any": "不限", "Results so far": "目前效果", "Purchases": "消费笔数",
    "Points taken back by refunds": "因退款收回的积分", "Budget left": "剩余预算",
    "What a purchase would earn, line by line, with the earning rules, the member's tier and the promotions in "
    "force. Nothing is recorded.": "按积分规则、会员等级和当前生效的促销活动，逐项计算一笔消费可得的积分。不会记录任何数据。",
    "Amount": "金额", "Member (optional): phone, member number, email or card token": "会员（可选）：手机号、会员号、邮箱或会员卡码",
    "Empty: a guest of the lowest tier, on a first purchase": "留空：视为最低等级的访客首次消费",
    "Items (optional)": "商品明细（可选）", "One a line: SKU, category, quantity, amount": "每行一件：SKU、品类、数量、金额",
    "Channel": "渠道", "Empty: store": "留空：门店", "Include draft promotions": "包括草稿状态的促销活动",
    "Simulate": "模拟", "Points this basket would earn": "此购物篮可得积分", "Source": "来源", "Line": "明细",
    "As of %(when)s": "按 %(when)s 计算", "Stop %(name)s?": "停止 %(name)s？",
    "This promotion is stopped already.": "此促销活动已经停止。",
    "Purchases from now on get nothing from this promotion. Points it gave stay with the members. A stopped "
    "promotion cannot be started again: you would create a new one.":
        "从现在起的消费不再获得此活动的积分；已发放的积分保留在会员账户中。停止后不能重新开始，只能新建活动。",
    "Stop the promotion": "停止促销活动", "Keep it running": "继续进行",
    "draft": "草稿", "stopped": "已停止", "ended": "已结束", "multiplier": "倍数积分", "per_amount": "按金额送积分",
    "stack": "可叠加", "exclusive": "互斥", "day": "每天", "week": "每周", "promotion": "整个活动期间",
    "base": "基础积分", "tier": "等级加成", "referral": "推荐奖励", "Base points": "基础积分",
    "Welcome reward: joined with a referral": "欢迎奖励：通过推荐加入",
    "Required for a multiplier effect.": "倍数积分必须填写此项。", "Required for a bonus effect.": "固定奖励必须填写此项。",
    "Required for a per_amount effect.": "按金额送积分必须填写此项。",
    "Not part of a multiplier effect.": "倍数积分不使用此项。", "Not part of a bonus effect.": "固定奖励不使用此项。",
    "Not part of a per_amount effect.": "按金额送积分不使用此项。",
    "A multiplier must be more than 1 and at most 10.": "倍数必须大于 1 且不超过 10。",
    "Unknown effect; must be one of: multiplier, bonus, per_amount.": "未知的奖励方式；必须是倍数积分、固定奖励或按金额送积分之一。",
    "Must be a day of the week from 1 (Monday) to 7 (Sunday).": "必须是 1（星期一）到 7（星期日）之间的星期。",
    "Must be a local time HH:MM, from 00:00 to 23:59.": "必须是当地时间 HH:MM，从 00:00 到 23:59。",
    "Must be after starts_at.": "必须晚于开始时间。",
    "Must differ from 'from' (a window of no time never applies).": "必须与开始时间不同（时长为零的时段永远不会生效）。",
    "Give per_member with per_member_period: how many purchases per period.": "设置周期时请同时填写每位会员可享次数。",
    "Must be draft or active.": "必须是草稿或进行中。",
    "Must be greater than or equal to 1 and less than or equal to 1000.": "必须在 1 到 1000 之间。",
    "Shorter than minimum length 1.": "不能为空。", "Not a valid string.": "不是有效的文本。",
    "Not a valid integer: use ASCII digits.": "不是有效的整数：请使用半角数字。",
    "Monday": "星期一", "Tuesday": "星期二", "Wednesday": "星期三", "Thursday": "星期四", "Friday": "星期五",
    "Saturday": "星期六", "Sunday": "星期日",
    "Promotion created.": "促销活动已创建。", "Promotion saved.": "促销活动已保存。",
    "Promotion stopped: purchases from now on get nothing from it.": "促销活动已停止：此后的消费不再获得它的积分。",
    "Write each item on its own line as: SKU, category, quantity, amount.": "每件商品写一行：SKU、品类、数量、金额。",
    "Several members match %(query)s; type their member number.": "有多位会员匹配 %(query)s，请输入会员号。",
    "Name the store this is for.": "请填写门店。",
    "Bulk awards": "批量发放积分", "Award": "发放单", "Credited": "已发放", "Failed runs": "失败次数",
    "Last error": "最近错误", "next try": "下次重试", "Cancel award": "取消发放", "Retry": "重试",
    "No bulk awards.": "暂无批量发放。",
    "Bulk award %(no)s cancelled: %(awarded)s of %(members)s members had been credited and keep their points.":
        "批量发放 %(no)s 已取消：%(members)s 位会员中已有 %(awarded)s 位获得积分，这些积分保留。",
    "Bulk award %(no)s queued again.": "批量发放 %(no)s 已重新排队。",
}


def main():
    pot = os.path.join(TRANSLATIONS, "messages.pot")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "pybabel"), "-q", "extract", "-F", "babel.cfg",
                    "-k", "lazy_gettext", "--no-location", "--omit-header", "-o", pot, "."], check=True, cwd=ROOT)
    with open(pot, "rb") as f:
        template = read_po(f)
    missing = []
    for locale in ("zh", "en"):
        folder = os.path.join(TRANSLATIONS, locale, "LC_MESSAGES")
        os.makedirs(folder, exist_ok=True)
        with open(pot, "rb") as f:
            catalog = read_po(f, locale=locale)
        for message in catalog:
            if not message.id:
                continue
            if locale == "zh":
                message.string = ZH.get(message.id, "")
                if not message.string:
                    missing.append(message.id)
        with open(os.path.join(folder, "messages.po"), "wb") as f:
            write_po(f, catalog, omit_header=False, no_location=True, width=100)
        with open(os.path.join(folder, "messages.mo"), "wb") as f:
            write_mo(f, catalog)
    del template
    if missing:
        sys.exit("No Chinese for: " + "; ".join(missing))


if __name__ == "__main__":
    main()
